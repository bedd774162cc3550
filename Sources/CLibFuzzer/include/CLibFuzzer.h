// libFuzzer's driver, for a harness whose main() is its own (clang's libclang_rt.fuzzer_no_main).
// Only the fuzz build (scripts/fuzz.sh, INTERCLOUD_FUZZ=1) uses this target.
#ifndef CLIBFUZZER_H
#define CLIBFUZZER_H
#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));

#endif

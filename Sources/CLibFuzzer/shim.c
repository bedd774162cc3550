// Nothing to compile: LLVMFuzzerRunDriver comes from libclang_rt.fuzzer_no_main at link time.
#include "CLibFuzzer.h"

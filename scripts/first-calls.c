/* Lists the functions of an executable in the order a run first calls them.
 *
 *   first-calls FUNCTIONS SECONDS OUTPUT PROGRAM [ARGS...]
 *
 * FUNCTIONS has one function per line, "HEXADDRESS NAME" (link-time addresses in PROGRAM, as
 * `readelf -sW` prints them). PROGRAM runs under ptrace with a breakpoint on the first byte of
 * every listed function; the first time a function is entered its byte is put back and its
 * name written to OUTPUT, so each function costs one stop. After SECONDS the program is killed.
 * Threads are followed. For x86-64 Linux only. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/types.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct function { uint64_t address; char *name; unsigned char original; int hit; };

static struct function *functions;
static size_t count;

static int by_address(const void *a, const void *b) {
    uint64_t x = ((const struct function *)a)->address, y = ((const struct function *)b)->address;
    return x < y ? -1 : x > y;
}

static struct function *find(uint64_t address) {
    size_t low = 0, high = count;
    while (low < high) {
        size_t middle = (low + high) / 2;
        if (functions[middle].address < address) low = middle + 1; else high = middle;
    }
    return low < count && functions[low].address == address ? &functions[low] : NULL;
}

/* Where PROGRAM's first mapping (file offset 0) starts: its load bias, PIE or not. */
static uint64_t load_base(pid_t pid, const char *program) {
    char path[64], line[4096], resolved[4096];
    snprintf(path, sizeof path, "/proc/%d/maps", pid);
    if (!realpath(program, resolved)) { perror(program); exit(1); }
    FILE *maps = fopen(path, "r");
    while (maps && fgets(line, sizeof line, maps)) {
        unsigned long start, offset;
        char file[4096] = "";
        if (sscanf(line, "%lx-%*x %*s %lx %*s %*s %4095s", &start, &offset, file) >= 2 && offset == 0 && strcmp(file, resolved) == 0) {
            fclose(maps);
            return start;
        }
    }
    fprintf(stderr, "first-calls: %s is not mapped\n", resolved);
    exit(1);
}

int main(int argc, char **argv) {
    if (argc < 5) { fprintf(stderr, "usage: first-calls FUNCTIONS SECONDS OUTPUT PROGRAM [ARGS...]\n"); return 2; }
    FILE *list = fopen(argv[1], "r");
    if (!list) { perror(argv[1]); return 1; }
    size_t capacity = 1 << 16;
    functions = malloc(capacity * sizeof *functions);
    char line[8192];
    while (fgets(line, sizeof line, list)) {
        char name[8000];
        unsigned long address;
        if (sscanf(line, "%lx %7999s", &address, name) != 2) continue;
        if (count == capacity) functions = realloc(functions, (capacity *= 2) * sizeof *functions);
        functions[count++] = (struct function){ .address = address, .name = strdup(name) };
    }
    fclose(list);
    qsort(functions, count, sizeof *functions, by_address);
    /* One breakpoint per address: aliases keep the first name. */
    size_t unique = 0;
    for (size_t i = 0; i < count; i++)
        if (unique == 0 || functions[unique - 1].address != functions[i].address) functions[unique++] = functions[i];
    count = unique;
    double seconds = atof(argv[2]);
    FILE *output = fopen(argv[3], "w");
    if (!output) { perror(argv[3]); return 1; }

    pid_t child = fork();
    if (child == 0) {
        ptrace(PTRACE_TRACEME, 0, NULL, NULL);
        execvp(argv[4], argv + 4);
        perror(argv[4]);
        _exit(127);
    }
    int status;
    waitpid(child, &status, 0);  /* stopped at exec */
    if (!WIFSTOPPED(status)) { fprintf(stderr, "first-calls: %s did not start\n", argv[4]); return 1; }
    ptrace(PTRACE_SETOPTIONS, child, NULL, (void *)(long)(PTRACE_O_TRACECLONE | PTRACE_O_EXITKILL));
    uint64_t base = load_base(child, argv[4]);
    char mem_path[64];
    snprintf(mem_path, sizeof mem_path, "/proc/%d/mem", child);
    int mem = open(mem_path, O_RDWR);
    if (mem < 0) { perror(mem_path); return 1; }
    unsigned char trap = 0xCC;
    for (size_t i = 0; i < count; i++) {
        if (pread(mem, &functions[i].original, 1, (off_t)(base + functions[i].address)) != 1 ||
            pwrite(mem, &trap, 1, (off_t)(base + functions[i].address)) != 1) {
            fprintf(stderr, "first-calls: cannot set a breakpoint at %lx\n", (unsigned long)functions[i].address);
            return 1;
        }
    }
    ptrace(PTRACE_CONT, child, NULL, NULL);

    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    size_t hits = 0;
    for (;;) {
        pid_t thread = waitpid(-1, &status, __WALL | WNOHANG);
        clock_gettime(CLOCK_MONOTONIC, &now);
        if ((now.tv_sec - start.tv_sec) + (now.tv_nsec - start.tv_nsec) / 1e9 > seconds) break;
        if (thread == 0) { usleep(1000); continue; }
        if (thread < 0) { if (errno == EINTR) continue; break; }
        if (WIFEXITED(status) || WIFSIGNALED(status)) { if (thread == child) break; continue; }
        if (!WIFSTOPPED(status)) continue;
        int signal = WSTOPSIG(status), deliver = 0;
        if (signal == SIGTRAP && (status >> 16) == 0) {
            struct user_regs_struct registers;
            ptrace(PTRACE_GETREGS, thread, NULL, &registers);
            struct function *function = find(registers.rip - 1 - base);
            if (function) {
                if (!function->hit) {
                    function->hit = 1;
                    pwrite(mem, &function->original, 1, (off_t)(base + function->address));
                    fprintf(output, "%s\n", function->name);
                    hits++;
                }
                /* Another thread may stop on a breakpoint already put back: rerun the instruction. */
                registers.rip -= 1;
                ptrace(PTRACE_SETREGS, thread, NULL, &registers);
            } else {
                deliver = SIGTRAP;
            }
        } else if (signal == SIGTRAP || signal == SIGSTOP) {
            deliver = 0;  /* clone events, and a new thread's first stop */
        } else {
            deliver = signal;
        }
        ptrace(PTRACE_CONT, thread, NULL, (void *)(long)deliver);
    }
    fclose(output);
    kill(child, SIGKILL);
    fprintf(stderr, "first-calls: %zu of %zu functions called\n", hits, count);
    return 0;
}

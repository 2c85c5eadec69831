/* bench_torch.c: `optim bench --torch`: run bench/torch_compare.py of the
 * checkout, which times optim.torch against torch.optim in one Python
 * process. This program only finds the script, the Python package and the
 * library built next to it, then hands over (exec). */
#define _DEFAULT_SOURCE /* readlink, setenv */
#include "bench.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef OPTIM_LAB_SOURCE_DIR
#define OPTIM_LAB_SOURCE_DIR "" /* the checkout this program was built from (tools/CMakeLists.txt) */
#endif

#ifndef PATH_MAX
#define PATH_MAX 4096
#endif

static int bench_is_file(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* Directory of this executable. */
static int bench_exe_dir(char *buf, size_t n)
{
    ssize_t len = readlink("/proc/self/exe", buf, n - 1);
    char *slash;
    if (len <= 0) return -1;
    buf[len] = '\0';
    slash = strrchr(buf, '/');
    if (!slash) return -1;
    *slash = '\0';
    return 0;
}

/* The checkout: $OPTIM_SOURCE_DIR, else walking up from the executable
 * (build directories live inside it), else the tree it was built from. */
static int bench_find_root(char *out, size_t n)
{
    char dir[PATH_MAX], probe[PATH_MAX + 64];
    const char *env = getenv("OPTIM_SOURCE_DIR");
    int up;
    if (env && *env) {
        snprintf(probe, sizeof probe, "%s/bench/torch_compare.py", env);
        if (!bench_is_file(probe)) {
            fprintf(stderr, "optim bench --torch: OPTIM_SOURCE_DIR=%s has no bench/torch_compare.py\n", env);
            return -1;
        }
        snprintf(out, n, "%s", env);
        return 0;
    }
    if (bench_exe_dir(dir, sizeof dir) == 0) {
        for (up = 0; up < 6; up++) {
            char *slash;
            snprintf(probe, sizeof probe, "%s/bench/torch_compare.py", dir);
            if (bench_is_file(probe)) {
                snprintf(out, n, "%s", dir);
                return 0;
            }
            slash = strrchr(dir, '/');
            if (!slash || slash == dir) break;
            *slash = '\0';
        }
    }
    if (*OPTIM_LAB_SOURCE_DIR) {
        snprintf(probe, sizeof probe, "%s/bench/torch_compare.py", OPTIM_LAB_SOURCE_DIR);
        if (bench_is_file(probe)) {
            snprintf(out, n, "%s", OPTIM_LAB_SOURCE_DIR);
            return 0;
        }
    }
    fprintf(stderr, "optim bench --torch: cannot find bench/torch_compare.py of the optim checkout; set "
                    "OPTIM_SOURCE_DIR to the checkout\n");
    return -1;
}

int bench_torch_main(int argc, char **argv)
{
    char root[PATH_MAX], script[PATH_MAX + 32], pypath[2 * PATH_MAX + 16], dir[PATH_MAX], lib[PATH_MAX + 32];
    const char *py = getenv("OPTIM_PYTHON"), *old;
    char **args;
    int i;
    if (bench_find_root(root, sizeof root) != 0) return 2;
    /* Debian's interpreter has torch; the first python3 on PATH may not. */
    if (!py || !*py) py = access("/usr/bin/python3", X_OK) == 0 ? "/usr/bin/python3" : "python3";
    snprintf(script, sizeof script, "%s/bench/torch_compare.py", root);
    old = getenv("PYTHONPATH");
    if (old && *old)
        snprintf(pypath, sizeof pypath, "%s/python:%s", root, old);
    else
        snprintf(pypath, sizeof pypath, "%s/python", root);
    setenv("PYTHONPATH", pypath, 1);
    setenv("PYTHONDONTWRITEBYTECODE", "1", 0);
    /* The library built with this program (build-x/tools/optim ->
     * build-x/liboptim.so), unless the caller chose one. */
    if (!getenv("OPTIM_LIBRARY") && bench_exe_dir(dir, sizeof dir) == 0) {
        snprintf(lib, sizeof lib, "%s/../liboptim.so", dir);
        if (bench_is_file(lib)) setenv("OPTIM_LIBRARY", lib, 1);
    }
    args = (char **)calloc((size_t)argc + 3, sizeof *args);
    if (!args) return 1;
    args[0] = (char *)py;
    args[1] = script;
    for (i = 1; i < argc; i++) args[i + 1] = argv[i];
    args[argc + 1] = NULL;
    fflush(stdout);
    fflush(stderr);
    execvp(py, args);
    fprintf(stderr, "optim bench --torch: cannot run %s: %s\n", py, strerror(errno));
    free(args);
    return 127;
}

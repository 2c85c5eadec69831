/* error.c: the one error scheme. Codes, names and messages come from
 * OPTIM_ERROR_MAP in optim.h; details are formatted into optim_error. */
#define _POSIX_C_SOURCE 200809L /* posix_memalign */
#include "common.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *optim_strerror(int code)
{
    switch (code) {
#define OPTIM__ERR_MSG(name, value, msg) \
    case value: return msg;
        OPTIM_ERROR_MAP(OPTIM__ERR_MSG)
#undef OPTIM__ERR_MSG
    default: return "unknown error code";
    }
}

const char *optim_err_name(int code)
{
    switch (code) {
#define OPTIM__ERR_NAME(name, value, msg) \
    case value: return "OPTIM_" #name;
        OPTIM_ERROR_MAP(OPTIM__ERR_NAME)
#undef OPTIM__ERR_NAME
    default: return "OPTIM_UNKNOWN";
    }
}

int optim__fail(optim_error *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        err->code = code;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
    }
    return code;
}

int optim__ok(optim_error *err)
{
    if (err) {
        err->code = OPTIM_OK;
        err->message[0] = '\0';
    }
    return OPTIM_OK;
}

void *optim__alloc_elems(size_t n, size_t size)
{
    void *p = NULL;
    size_t bytes;
    if (size == 0 || n > (SIZE_MAX - OPTIM__ALIGN) / size) return NULL;
    /* Round up so that vector code may touch a whole last cache line. */
    bytes = (n * size + OPTIM__ALIGN - 1) / OPTIM__ALIGN * OPTIM__ALIGN;
    if (bytes == 0) bytes = OPTIM__ALIGN;
    if (posix_memalign(&p, OPTIM__ALIGN, bytes) != 0) return NULL;
    return p;
}

float *optim__alloc_floats(size_t n)
{
    return (float *)optim__alloc_elems(n, sizeof(float));
}

void optim__free_floats(float *p)
{
    free(p);
}

int optim__overlap_bytes(const void *a, size_t na, const void *b, size_t nb)
{
    uintptr_t a0 = (uintptr_t)a, b0 = (uintptr_t)b;
    if (na == 0 || nb == 0 || !a || !b) return 0;
    return a0 < b0 + nb && b0 < a0 + na;
}

int optim__overlap(const void *a, size_t na, const void *b, size_t nb)
{
    return optim__overlap_bytes(a, na * sizeof(float), b, nb * sizeof(float));
}

unsigned optim_version_number(void)
{
    return OPTIM_VERSION_NUMBER;
}

const char *optim_version_string(void)
{
    return OPTIM_VERSION_STRING;
}

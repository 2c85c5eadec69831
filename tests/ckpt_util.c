/* ckpt_util.c: see ckpt_util.h. */
#define _POSIX_C_SOURCE 200809L
#include "ckpt_util.h"

#include "kernels/kernels.h"
#include "optim_checkpoint.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

char *ckpt_scratch(char *buf, size_t size)
{
    snprintf(buf, size, "/tmp/optim-ckpt-test-XXXXXX");
    return mkdtemp(buf);
}

void ckpt_remove_tree(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char path[1024];
    if (!d) return;
    while ((e = readdir(d)) != NULL) {
        struct stat st;
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (lstat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
            chmod(path, 0700);
            ckpt_remove_tree(path);
        } else {
            unlink(path);
        }
    }
    closedir(d);
    rmdir(dir);
}

int ckpt_read_file(const char *path, unsigned char **data, size_t *size)
{
    FILE *f = fopen(path, "rb");
    long n;
    *data = NULL;
    if (!f) return -1;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    *data = (unsigned char *)malloc(n > 0 ? (size_t)n : 1);
    *size = (size_t)n;
    if (!*data || fread(*data, 1, *size, f) != *size) {
        fclose(f);
        free(*data);
        *data = NULL;
        return -1;
    }
    fclose(f);
    return 0;
}

int ckpt_write_file(const char *path, const void *data, size_t size)
{
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    if (fwrite(data, 1, size, f) != size) {
        fclose(f);
        return -1;
    }
    return fclose(f) == 0 ? 0 : -1;
}

void ckpt_put_le(unsigned char *d, uint64_t v, int bytes)
{
    int i;
    for (i = 0; i < bytes; i++) d[i] = (unsigned char)(v >> (8 * i));
}

uint64_t ckpt_get_le(const unsigned char *d, int bytes)
{
    uint64_t v = 0;
    int i;
    for (i = 0; i < bytes; i++) v |= (uint64_t)d[i] << (8 * i);
    return v;
}

void ckpt_rechecksum(unsigned char *d, size_t size)
{
    size_t pos = 32, end = size - 12;
    while (pos + 16 <= end) {
        uint64_t len = ckpt_get_le(d + pos + 8, 8);
        if (len > end - pos - 16) break;
        ckpt_put_le(d + pos + 16 + len, optim__crc32c(0, d + pos, 16 + (size_t)len), 4);
        pos += 16 + (size_t)len + 4;
    }
    ckpt_put_le(d + 28, optim__crc32c(0, d, 28), 4);
    ckpt_put_le(d + end, optim__crc32c(0, d, end), 4);
}

size_t ckpt_section_offset(const unsigned char *d, size_t size, unsigned k)
{
    size_t pos = 32, end = size - 12;
    unsigned i;
    for (i = 0; pos + 20 <= end; i++) {
        if (i == k) return pos;
        pos += 20 + (size_t)ckpt_get_le(d + pos + 8, 8);
    }
    return 0;
}

unsigned char *ckpt_insert_section(const unsigned char *d, size_t size, unsigned before, const char tag[4],
                                   uint32_t flags, const void *payload, size_t len, size_t *out_size)
{
    size_t at = ckpt_section_offset(d, size, before), n = size + 20 + len;
    unsigned char *o = (unsigned char *)malloc(n);
    if (!o) return NULL;
    if (!at) at = size - 12; /* at the end of the sections */
    memcpy(o, d, at);
    memcpy(o + at, tag, 4);
    ckpt_put_le(o + at + 4, flags, 4);
    ckpt_put_le(o + at + 8, len, 8);
    if (len) memcpy(o + at + 16, payload, len);
    memcpy(o + at + 20 + len, d + at, size - at);
    ckpt_put_le(o + 16, n, 8);
    ckpt_put_le(o + 24, ckpt_get_le(o + 24, 4) + 1, 4);
    ckpt_rechecksum(o, n);
    *out_size = n;
    return o;
}

int ckpt_same_state(optim *a, optim *b)
{
    void *x = NULL, *y = NULL;
    size_t nx = 0, ny = 0;
    int same;
    if (optim_save_buffer(a, &x, &nx) != OPTIM_OK || optim_save_buffer(b, &y, &ny) != OPTIM_OK) {
        free(x);
        free(y);
        return 0;
    }
    same = nx == ny && memcmp(x, y, nx) == 0;
    free(x);
    free(y);
    return same;
}

/* lab_json.c: the small JSON tree behind summary.json. */
#include "lab.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static lab_json *jnew(lab_jtype t)
{
    lab_json *v = (lab_json *)lab_xcalloc(1, sizeof *v);
    v->type = t;
    return v;
}

lab_json *lab_json_object(void) { return jnew(LAB_JOBJ); }
lab_json *lab_json_array(void) { return jnew(LAB_JARR); }
lab_json *lab_json_null(void) { return jnew(LAB_JNULL); }

lab_json *lab_json_num(double x)
{
    lab_json *v;
    if (!isfinite(x)) return jnew(LAB_JNULL);
    v = jnew(LAB_JNUM);
    v->num = x;
    return v;
}

lab_json *lab_json_str(const char *s)
{
    lab_json *v = jnew(LAB_JSTR);
    v->str = lab_xstrdup(s ? s : "");
    return v;
}

lab_json *lab_json_strf(const char *fmt, ...)
{
    lab_json *v = jnew(LAB_JSTR);
    va_list ap;
    int n;
    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    v->str = (char *)lab_xmalloc((size_t)(n > 0 ? n : 0) + 1);
    va_start(ap, fmt);
    vsnprintf(v->str, (size_t)(n > 0 ? n : 0) + 1, fmt, ap);
    va_end(ap);
    return v;
}

lab_json *lab_json_bool(int b)
{
    lab_json *v = jnew(LAB_JBOOL);
    v->boolean = b != 0;
    return v;
}

void lab_json_free(lab_json *v)
{
    while (v) {
        lab_json *next = v->next;
        lab_json_free(v->child);
        free(v->str);
        free(v->key);
        free(v);
        v = next;
    }
}

static lab_json *member(const lab_json *obj, const char *key, size_t len)
{
    lab_json *c;
    if (!obj || obj->type != LAB_JOBJ) return NULL;
    for (c = obj->child; c; c = c->next)
        if (strlen(c->key) == len && memcmp(c->key, key, len) == 0) return c;
    return NULL;
}

lab_json *lab_json_put(lab_json *obj, const char *key, lab_json *v)
{
    lab_json *c, *prev = NULL;
    v->key = lab_xstrdup(key);
    for (c = obj->child; c; prev = c, c = c->next) {
        if (strcmp(c->key, key) == 0) {
            /* Replace in place, keeping the member's position. */
            v->next = c->next;
            if (prev)
                prev->next = v;
            else
                obj->child = v;
            if (obj->last == c) obj->last = v;
            c->next = NULL;
            lab_json_free(c);
            return v;
        }
    }
    if (obj->last)
        obj->last->next = v;
    else
        obj->child = v;
    obj->last = v;
    return v;
}

lab_json *lab_json_push(lab_json *arr, lab_json *v)
{
    if (arr->last)
        arr->last->next = v;
    else
        arr->child = v;
    arr->last = v;
    return v;
}

lab_json *lab_json_set(lab_json *obj, const char *path, lab_json *v)
{
    const char *dot;
    while ((dot = strchr(path, '.')) != NULL) {
        lab_json *next = member(obj, path, (size_t)(dot - path));
        if (!next || next->type != LAB_JOBJ) {
            char *key = (char *)lab_xmalloc((size_t)(dot - path) + 1);
            memcpy(key, path, (size_t)(dot - path));
            key[dot - path] = '\0';
            next = lab_json_put(obj, key, lab_json_object());
            free(key);
        }
        obj = next;
        path = dot + 1;
    }
    return lab_json_put(obj, path, v);
}

lab_json *lab_json_get(const lab_json *obj, const char *path)
{
    const char *dot;
    while ((dot = strchr(path, '.')) != NULL) {
        obj = member(obj, path, (size_t)(dot - path));
        if (!obj) return NULL;
        path = dot + 1;
    }
    return member(obj, path, strlen(path));
}

lab_json *lab_json_numbers(const double *x, size_t n)
{
    lab_json *a = lab_json_array();
    size_t i;
    for (i = 0; i < n; i++) lab_json_push(a, lab_json_num(x[i]));
    return a;
}

void lab_json_set_num(lab_json *obj, const char *path, double x) { lab_json_set(obj, path, lab_json_num(x)); }
void lab_json_set_str(lab_json *obj, const char *path, const char *s) { lab_json_set(obj, path, lab_json_str(s)); }

static void write_string(const char *s, FILE *f)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        switch (c) {
        case '"': fputs("\\\"", f); break;
        case '\\': fputs("\\\\", f); break;
        case '\n': fputs("\\n", f); break;
        case '\r': fputs("\\r", f); break;
        case '\t': fputs("\\t", f); break;
        default:
            if (c < 0x20)
                fprintf(f, "\\u%04x", c);
            else
                fputc(c, f); /* UTF-8 passes through unchanged */
        }
    }
    fputc('"', f);
}

/* Arrays of numbers only go on one line: a path of 1000 points stays readable. */
static int is_flat(const lab_json *v)
{
    const lab_json *c;
    for (c = v->child; c; c = c->next)
        if (c->type == LAB_JARR || c->type == LAB_JOBJ) return 0;
    return 1;
}

static void write_value(const lab_json *v, FILE *f, int depth)
{
    const lab_json *c;
    int flat;
    switch (v->type) {
    case LAB_JNULL: fputs("null", f); break;
    case LAB_JBOOL: fputs(v->boolean ? "true" : "false", f); break;
    case LAB_JNUM:
        /* %.17g round-trips doubles; integers print without a fraction. */
        if (v->num == floor(v->num) && fabs(v->num) < 1e15)
            fprintf(f, "%.0f", v->num);
        else
            fprintf(f, "%.17g", v->num);
        break;
    case LAB_JSTR: write_string(v->str, f); break;
    case LAB_JARR:
    case LAB_JOBJ:
        flat = v->type == LAB_JARR && is_flat(v);
        fputc(v->type == LAB_JARR ? '[' : '{', f);
        for (c = v->child; c; c = c->next) {
            if (flat) {
                if (c != v->child) fputs(", ", f);
            } else {
                fprintf(f, "%s\n%*s", c == v->child ? "" : ",", 2 * (depth + 1), "");
            }
            if (v->type == LAB_JOBJ) {
                write_string(c->key, f);
                fputs(": ", f);
            }
            write_value(c, f, depth + 1);
        }
        if (!flat && v->child) fprintf(f, "\n%*s", 2 * depth, "");
        fputc(v->type == LAB_JARR ? ']' : '}', f);
        break;
    }
}

int lab_json_write(const lab_json *v, FILE *f)
{
    write_value(v, f, 0);
    fputc('\n', f);
    return ferror(f) ? -1 : 0;
}

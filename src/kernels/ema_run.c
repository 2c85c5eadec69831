/* ema_run.c: the passes of the EMA of the weights (include/optim_ema.h)
 * over a task's range: the update and its average span by span (the new
 * parameter still in cache when averaged), the average alone, and the
 * swap. Element-wise: any split gives the same bits. */
#include "kernels.h"

#include <string.h>

static size_t optim__ema_csize(optim__ctype ct)
{
    return ct == OPTIM__CT_F64 ? sizeof(double) : sizeof(float);
}

/* Average elements [from, to) of t from its parameter as stored: in place
 * when it holds the compute type (float32, float64, a master), else widened
 * chunk by chunk into L1 (a bfloat16/float16 parameter, after its rounding).
 * The task's range goes on to lim >= to: the average's prefetch reaches the
 * next span's first lines, and nothing past lim; lim 0: no prefetch. */
static void optim__ema_span(const optim__kernels *kt, const optim__task *t, size_t from, size_t to, size_t lim)
{
    const optim__storage *sp = t->sto[OPTIM__SP];
    const optim__ctype ct = sp->ctype;
    const size_t es = optim__ema_csize(ct);
    size_t c;
    if (sp->direct) {
        kt->ema[ct](to - from, lim ? lim - from : 0, (char *)t->ema + from * es, (const char *)t->p + from * es,
                    t->ek);
        return;
    }
    for (c = from; c < to; c += OPTIM__CHUNK) {
        _Alignas(64) float buf[OPTIM__CHUNK]; /* 16-bit parameters compute in float */
        const size_t len = to - c < OPTIM__CHUNK ? to - c : OPTIM__CHUNK;
        sp->load(buf, t->p, c, len, NULL);
        kt->ema[ct](len, lim ? lim - c : 0, (float *)t->ema + c, buf, t->ek);
    }
}

void optim__range_update_ema(const optim__kernels *kt, const optim__task *t, size_t from, size_t to)
{
    optim__range_then_ema(kt, t, from, to, optim__range_update);
}

/* The end of the range [from, to) for the average's prefetch: 0 (none) for a short range. */
static size_t optim__ema_lim(const optim__task *t, size_t from, size_t to)
{
    return (to - from) * optim__ema_csize(t->sto[OPTIM__SP]->ctype) <= OPTIM__EMA_PF_MIN ? 0 : to;
}

void optim__range_then_ema(const optim__kernels *kt, const optim__task *t, size_t from, size_t to,
                           optim__range_fn update)
{
    optim__task u = *t; /* the same task without its EMA stream: the update exactly as without one */
    const size_t lim = optim__ema_lim(t, from, to);
    size_t c = from;
    u.ema = NULL;
    /* Spans end on multiples of OPTIM__RBLOCK in the tensor: the splits of the update pass (chunks of the
     * chunked path, blocks of a step with statistics) fall where they fall without the EMA. */
    while (c < to) {
        size_t e = (c / OPTIM__RBLOCK + 1) * OPTIM__RBLOCK;
        if (e > to) e = to;
        update(kt, &u, c, e);
        optim__ema_span(kt, t, c, e, lim);
        c = e;
    }
}

void optim__range_ema(const optim__kernels *kt, const optim__task *t, size_t from, size_t to)
{
    optim__ema_span(kt, t, from, to, optim__ema_lim(t, from, to));
}

void optim__range_ema_swap(const optim__kernels *kt, const optim__task *t, size_t from, size_t to)
{
    const int in = *(const int *)t->k;
    const optim__storage *sp = t->sto[OPTIM__SP];
    const size_t n = to - from;
    if (sp->direct) {
        /* float32/float64 parameters and masters: exchanged, exactly. */
        const size_t es = optim__ema_csize(sp->ctype);
        kt->ema_swap[sp->ctype](n, (char *)t->p + from * es, (char *)t->ema + from * es);
        if (t->copy) {
            /* The master's 16-bit copy: kept aside, then the new master rounded to nearest even; back as it was. */
            const optim__storage *sc = t->sto[OPTIM__SC];
            char *copy = (char *)t->copy + from * sc->size, *stash = (char *)t->s[0] + from * sc->size;
            if (in) {
                memcpy(stash, copy, n * sc->size);
                sc->store(t->copy, from, n, (const float *)t->p + from, NULL);
            } else {
                memcpy(copy, stash, n * sc->size);
            }
        }
        return;
    }
    /* A 16-bit parameter: kept aside, then the average rounded to nearest even; back as it was. */
    if (in) {
        memcpy((char *)t->s[0] + from * sp->size, (const char *)t->p + from * sp->size, n * sp->size);
        sp->store(t->p, from, n, (const float *)t->ema + from, NULL);
    } else {
        memcpy((char *)t->p + from * sp->size, (const char *)t->s[0] + from * sp->size, n * sp->size);
    }
}

/* test_types.c: element types: the conversions against the tests' own (from
 * the definitions), the typed API and its refusals, checkpoints of typed
 * parameters, and the thread bound. */
#include "grid.h"
#include "typed.h"

#include "kernels/convert.h" /* white box: the library's conversions */
#include "kernels/kernels.h" /* white box: optim__threads_for, the loop tables */
#include "optim_internal.h"  /* white box: an optimizer on a table without some loops */
#include "optim_checkpoint.h"
#include "optim_sam.h"
#include "optim_clip.h"

#ifdef _OPENMP
#  include <omp.h>
#endif

/* Floats around every bfloat16 and float16 value: the value, the midpoint to
 * its neighbour (a tie), and the floats just beside the midpoint, plus the
 * extremes; and a random sample. */
static int check_store(float x, long *checked)
{
    uint16_t a = optim__f32_to_bf16(x), b = t_bf16_from_float(x);
    if (a != b) FAIL("bfloat16 of %a (0x%08x): library 0x%04x, reference 0x%04x", (double)x, tbits(x), a, b);
    a = optim__f32_to_f16(x);
    b = t_f16_from_float(x);
    if (a != b) FAIL("float16 of %a (0x%08x): library 0x%04x, reference 0x%04x", (double)x, tbits(x), a, b);
    (*checked)++;
    return 0;
}

TEST_IMPL(conversions_exact)
{
    test_rng rng = {test_seed() ^ 0xc0de};
    long checked = 0, ties = 0;
    uint32_t h, k;
    /* Loads: every value of both types, exactly. */
    for (h = 0; h < 65536; h++) {
        float a = optim__bf16_to_f32((uint16_t)h), b = t_bf16_to_float((uint16_t)h);
        double c = optim__f16_to_f32((uint16_t)h), d = t_f16_to_double((uint16_t)h);
        if (tbits(a) != tbits(b)) FAIL("bfloat16 0x%04x loads as 0x%08x, not 0x%08x", h, tbits(a), tbits(b));
        if (!(c == d || (isnan(c) && isnan(d))) || signbit(c) != signbit(d))
            FAIL("float16 0x%04x loads as %a, not %a", h, c, d);
    }
    /* Stores: around every upper half of a float (bfloat16's grid) ... */
    for (h = 0; h < 65536; h++) {
        static const uint32_t lows[] = {0x0000, 0x0001, 0x7fff, 0x8000, 0x8001, 0xffff};
        for (k = 0; k < sizeof lows / sizeof lows[0]; k++)
            if (check_store(tfloat(h << 16 | lows[k]), &checked)) return 1;
    }
    /* ... around every float16 value and its midpoints ... */
    for (h = 0; h < 0x7c00; h++) {
        double v = t_f16_to_double((uint16_t)h), next = h + 1 < 0x7c00 ? t_f16_to_double((uint16_t)(h + 1)) : 65536.0;
        float mid = (float)((v + next) / 2); /* exact: a float holds a float16 midpoint */
        float s;
        for (s = -1; s <= 1; s += 2) {
            if (check_store((float)(s * v), &checked) || check_store(s * mid, &checked) ||
                check_store(nextafterf(s * mid, 0), &checked) || check_store(nextafterf(s * mid, s * INFINITY), &checked))
                return 1;
        }
        ties++;
    }
    /* ... and random floats of every magnitude, with the specials. */
    for (k = 0; k < 1000000; k++)
        if (check_store(tfloat((uint32_t)test_rng_u64(&rng)), &checked)) return 1;
    {
        static const float specials[] = {0.0f, -0.0f, INFINITY, -INFINITY, 65504.0f, 65519.996f, 65520.0f, 3.4028235e38f,
                                         1.1754944e-38f, 1.4e-45f, 5.9604645e-08f, 2.9802322e-08f, 2.9802326e-08f};
        for (k = 0; k < sizeof specials / sizeof specials[0]; k++)
            if (check_store(specials[k], &checked) || check_store(-specials[k], &checked)) return 1;
    }
    /* NaN: bfloat16 0x7fc0 whatever the NaN (torch's); float16 keeps the sign. */
    ASSERT_INT(optim__f32_to_bf16(tfloat(0xffc00000u)), ==, 0x7fc0);
    ASSERT_INT(optim__f32_to_bf16(tfloat(0x7f800001u)), ==, 0x7fc0);
    ASSERT_INT(optim__f32_to_f16(tfloat(0x7fc00000u)), ==, 0x7e00);
    ASSERT_INT(optim__f32_to_f16(tfloat(0xffc00000u)), ==, 0xfe00);
    printf("  every bfloat16 and float16 loads exactly; %ld stores (%ld float16 midpoints) round as the references\n",
           checked, ties);
    return 0;
}

/* The typed API: supported pairs, refusals naming both types, the float *
 * functions refused for other types, state access by type. */
TEST_IMPL(dtype_api)
{
    optim_error err;
    optim_dtype a, b, st;
    optim *o = NULL;
    optim_hparams hp;
    double p64[8] = {1, 2, 3, 4, 5, 6, 7, 8}, g64[8] = {0};
    float p32[8] = {0}, g32[8] = {0};
    uint16_t pb[8] = {0}, gb[8] = {0};
    void *data = NULL;
    float *fdata = NULL;
    optim_dtype dt;
    size_t idx = 0;
    ASSERT(strcmp(optim_dtype_name(OPTIM_FLOAT32), "float32") == 0);
    ASSERT(strcmp(optim_dtype_name(OPTIM_BFLOAT16), "bfloat16") == 0);
    ASSERT(optim_dtype_name((optim_dtype)OPTIM_DTYPE_COUNT) == NULL);
    ASSERT_INT(optim_dtype_size(OPTIM_FLOAT64), ==, 8);
    ASSERT_INT(optim_dtype_size(OPTIM_FLOAT16), ==, 2);
    ASSERT_INT(optim_dtype_size((optim_dtype)-1), ==, 0);
    /* Every pair: the supported ones, and the state each gets. */
    for (a = OPTIM_FLOAT32; (int)a < OPTIM_DTYPE_COUNT; a++)
        for (b = OPTIM_FLOAT32; (int)b < OPTIM_DTYPE_COUNT; b++) {
            int want = (a == b && a != OPTIM_INT8_BLOCK) ||
                       (a == OPTIM_FLOAT32 && (b == OPTIM_BFLOAT16 || b == OPTIM_FLOAT16));
            int rc = optim_dtypes_check(a, b, &st, &err);
            if (want) {
                ASSERT_OK_MSG(rc, err.message);
                ASSERT_INT(st, ==, a == OPTIM_FLOAT64 ? OPTIM_FLOAT64 : OPTIM_FLOAT32);
            } else {
                ASSERT_INT(rc, ==, OPTIM_EUNSUPPORTED);
                if (!strstr(err.message, optim_dtype_name(a)) || !strstr(err.message, optim_dtype_name(b)))
                    FAIL("message does not name both types: %s", err.message);
            }
        }
    ASSERT_ERR(optim_dtypes_check((optim_dtype)9, OPTIM_FLOAT32, NULL, &err), OPTIM_EINVAL, err.message,
               "param_dtype = 9");

    ASSERT_OK(optim_hparams_init(&hp, OPTIM_ADAM, NULL));
    ASSERT_OK(optim_create(&o, OPTIM_ADAM));
    ASSERT_OPT_OK(o, optim_add_group(o, &hp, NULL));
    ASSERT_ERR(optim_add_param_typed(o, 0, p64, OPTIM_FLOAT64, g32, OPTIM_FLOAT32, 8, "w", NULL), OPTIM_EUNSUPPORTED,
               optim_errmsg(o), "float32 gradients for float64 parameters");
    ASSERT_ERR(optim_add_param_typed(o, 0, pb, OPTIM_BFLOAT16, g32, OPTIM_FLOAT32, 8, "w", NULL), OPTIM_EUNSUPPORTED,
               optim_errmsg(o), "float32 gradients for bfloat16 parameters");
    ASSERT_ERR(optim_add_param_typed(o, 0, (char *)p64 + 4, OPTIM_FLOAT64, g64, OPTIM_FLOAT64, 4, "w", NULL),
               OPTIM_EINVAL, optim_errmsg(o), "not aligned to 8 bytes (float64)");
    ASSERT_ERR(optim_add_param_typed(o, 0, p64, OPTIM_FLOAT64, p64 + 4, OPTIM_FLOAT64, 8, "w", NULL), OPTIM_EOVERLAP,
               optim_errmsg(o), "overlap");
    /* The state's type (optim_add_param_ex): float64's own, or float32/bfloat16/float16/int8_block for the
     * others (int8_block is no parameter type). */
    for (a = OPTIM_FLOAT32; (int)a < OPTIM_DTYPE_COUNT; a++)
        for (b = OPTIM_FLOAT32; (int)b < OPTIM_DTYPE_COUNT; b++) {
            int want = a == OPTIM_INT8_BLOCK ? 0 : a == OPTIM_FLOAT64 ? b == OPTIM_FLOAT64 : b != OPTIM_FLOAT64;
            int rc = optim_state_dtype_check(a, b, &err);
            if (want) {
                ASSERT_OK_MSG(rc, err.message);
            } else {
                ASSERT_INT(rc, ==, OPTIM_EUNSUPPORTED);
                if (!strstr(err.message, optim_dtype_name(a)) || !strstr(err.message, optim_dtype_name(b)))
                    FAIL("message does not name both types: %s", err.message);
            }
        }
    ASSERT_ERR(optim_state_dtype_check(OPTIM_FLOAT32, (optim_dtype)7, &err), OPTIM_EINVAL, err.message,
               "state_dtype = 7");
    ASSERT_ERR(optim_add_param_ex(o, 0, p64, OPTIM_FLOAT64, g64, OPTIM_FLOAT64, 8, OPTIM_FLOAT32, 0, "w", NULL),
               OPTIM_EUNSUPPORTED, optim_errmsg(o), "float32 state for float64 parameters");
    ASSERT_ERR(optim_add_param_ex(o, 0, pb, OPTIM_BFLOAT16, gb, OPTIM_BFLOAT16, 8, OPTIM_BFLOAT16, 16, "w", NULL),
               OPTIM_EINVAL, optim_errmsg(o), "flags = 0x10");
    ASSERT_INT(optim_param_count(o), ==, 0);
    ASSERT_OPT_OK(o, optim_add_param_typed(o, 0, p64, OPTIM_FLOAT64, g64, OPTIM_FLOAT64, 8, "w64", &idx));
    ASSERT_INT(idx, ==, 0);
    ASSERT_OPT_OK(o, optim_add_param_typed(o, 0, pb, OPTIM_BFLOAT16, gb, OPTIM_BFLOAT16, 8, "wb", NULL));
    ASSERT_OPT_OK(o, optim_add_param(o, 0, p32, g32, 8, "w32", NULL));
    /* A float32 parameter's memory overlapping a float64 one's bytes (the sizes are per type). */
    {
        double big[16];
        ASSERT_ERR(optim_add_param(o, 0, (float *)(void *)p64 + 15, NULL, 2, "x", NULL), OPTIM_EOVERLAP,
                   optim_errmsg(o), "overlaps the memory of param 0 'w64'");
        (void)big;
    }
    ASSERT_OPT_OK(o, optim_param_get_dtypes(o, 0, &a, &b, &st));
    ASSERT(a == OPTIM_FLOAT64 && b == OPTIM_FLOAT64 && st == OPTIM_FLOAT64);
    ASSERT_OPT_OK(o, optim_param_get_dtypes(o, 1, &a, &b, &st));
    ASSERT(a == OPTIM_BFLOAT16 && b == OPTIM_BFLOAT16 && st == OPTIM_FLOAT32);
    ASSERT_ERR(optim_param_get_dtypes(o, 3, &a, NULL, NULL), OPTIM_ERANGE, optim_errmsg(o), "param 3 does not exist");
    /* The float * functions refuse other types, naming them. */
    ASSERT_ERR(optim_state_slot(o, 0, 0, &fdata, NULL), OPTIM_EUNSUPPORTED, optim_errmsg(o),
               "state of param 0 'w64' is float64, not float32: use optim_state_slot_data");
    ASSERT_ERR(optim_set_param_ptrs(o, 1, p32, g32), OPTIM_EINVAL, optim_errmsg(o),
               "param 1 'wb' has bfloat16 memory and bfloat16 gradients, not float32: use optim_set_param_data");
    ASSERT_ERR(optim_set_grad(o, 0, g32), OPTIM_EINVAL, optim_errmsg(o), "use optim_set_grad_data");
    {
        float *ps[3] = {(float *)(void *)p64, (float *)(void *)pb, p32};
        const float *gs[3] = {(const float *)(void *)g64, (const float *)(void *)gb, g32};
        ASSERT_ERR(optim_step_with(o, 3, ps, gs), OPTIM_EINVAL, optim_errmsg(o), "use optim_step_with_data");
    }
    ASSERT_OPT_OK(o, optim_state_slot(o, 1, 0, &fdata, NULL)); /* float32 state of a bfloat16 parameter */
    ASSERT_OPT_OK(o, optim_state_slot_data(o, 0, 1, &data, &dt, NULL));
    ASSERT(data != NULL && dt == OPTIM_FLOAT64);
    ASSERT_OPT_OK(o, optim_set_grad_data(o, 0, NULL));
    ASSERT_OPT_OK(o, optim_set_param_data(o, 0, p64, g64));
    ASSERT_ERR(optim_set_param_data(o, 0, p64, (char *)g64 + 2), OPTIM_EINVAL, optim_errmsg(o), "gradient of param 0");
    {
        void *ps[3] = {p64, pb, p32};
        const void *gs[3] = {g64, gb, g32};
        int i;
        for (i = 0; i < 8; i++) {
            g64[i] = 0.5;
            gb[i] = 0x3f00; /* 0.5 */
            g32[i] = 0.5f;
            pb[i] = 0x3f80; /* 1.0 */
            p32[i] = 1.0f;
        }
        ASSERT_OPT_OK(o, optim_step_with_data(o, 3, ps, gs));
        /* Adam's first step moves every element by lr (1e-3) against the gradient's sign. */
        ASSERT(fabs(p64[0] - (1.0 - 1e-3)) < 1e-9);
        ASSERT(fabs(p32[0] - (1.0f - 1e-3f)) < 1e-6);
        ASSERT_INT(pb[0], ==, t_bf16_from_float(p32[0]));
        gs[1] = (const char *)gb + 1;
        ASSERT_ERR(optim_step_with_data(o, 3, ps, gs), OPTIM_EINVAL, optim_errmsg(o), "not aligned to 2 bytes");
    }
    /* SAM takes float32 parameters only. */
    {
        optim_sam *sam = NULL;
        ASSERT_ERR(optim_sam_create(&sam, o, 0.05, 2.0, 0, 0.0, &err), OPTIM_EUNSUPPORTED, err.message,
                   "param 0 'w64' has float64 memory and float64 gradients; SAM takes float32 ones only");
        ASSERT(sam == NULL);
    }
    optim_free(o);

    /* The stateless level. */
    {
        optim_state s64;
        double m[8], v[8], pp[8], gg[8];
        int i;
        memset(&s64, 0, sizeof s64);
        s64.slot[0] = (float *)(void *)m;
        s64.slot[1] = (float *)(void *)v;
        ASSERT_OK_MSG(optim_state_init_typed(&hp, 8, OPTIM_FLOAT64, &s64, &err), err.message);
        for (i = 0; i < 8; i++) {
            pp[i] = 1.0;
            gg[i] = -0.25;
        }
        ASSERT_OK_MSG(optim_update_typed(&hp, 8, pp, OPTIM_FLOAT64, gg, OPTIM_FLOAT64, &s64, &err), err.message);
        ASSERT(fabs(pp[3] - (1.0 + 1e-3)) < 1e-9 && s64.step == 1);
        ASSERT(fabs(m[0] - -0.025) < 1e-17);
        ASSERT_ERR(optim_update_typed(&hp, 8, pp, OPTIM_FLOAT64, gg, OPTIM_FLOAT32, &s64, &err), OPTIM_EUNSUPPORTED,
                   err.message, "float32 gradients for float64 parameters");
        ASSERT_ERR(optim_state_init_typed(&hp, 8, OPTIM_BFLOAT16, &s64, &err), OPTIM_EUNSUPPORTED, err.message,
                   "state of type bfloat16");
        ASSERT_INT(s64.step, ==, 1);
    }
    return 0;
}

/* Memory at an address that is no multiple of its element size, float32
 * included, through every call that takes caller memory as a pointer (the
 * typed calls take void pointers, and a binding passes integers: torch's
 * frombuffer makes a float32 tensor at any byte offset). Each is refused
 * with OPTIM_EINVAL naming the array, and nothing changes. Before, float32
 * memory was not checked: the kernels loaded floats from odd addresses
 * (UBSan: "load of misaligned address", undefined behaviour). */
TEST_IMPL(misaligned_memory_refused)
{
    static const optim_dtype pdts[3] = {OPTIM_FLOAT32, OPTIM_FLOAT32, OPTIM_FLOAT64};
    static const optim_dtype gdts[3] = {OPTIM_FLOAT32, OPTIM_BFLOAT16, OPTIM_FLOAT64};
    enum { N = 40 };
    optim_error err;
    optim_hparams hp;
    size_t c, off;
    ASSERT_OK(optim_hparams_init(&hp, OPTIM_ADAM, NULL));
    for (c = 0; c < 3; c++) {
        size_t ps = optim_dtype_size(pdts[c]), gs = optim_dtype_size(gdts[c]);
        for (off = 1; off < ps || off < gs; off++) {
            unsigned char pbuf[N * 8 + 16], gbuf[N * 8 + 16], pbuf2[N * 8 + 16];
            unsigned char *p = pbuf + (16 - (uintptr_t)pbuf % 16) % 16, *g = gbuf + (16 - (uintptr_t)gbuf % 16) % 16;
            unsigned char *p2 = pbuf2 + (16 - (uintptr_t)pbuf2 % 16) % 16;
            void *before = NULL, *after = NULL;
            size_t bsize = 0, asize = 0;
            optim *o = NULL;
            int bad_p = off % ps != 0, bad_g = off % gs != 0;
            memset(pbuf, 0, sizeof pbuf);
            memset(gbuf, 0, sizeof gbuf);
            ASSERT_OK(optim_create(&o, OPTIM_ADAM));
            ASSERT_OPT_OK(o, optim_add_group(o, &hp, NULL));
            if (bad_p)
                ASSERT_ERR(optim_add_param_typed(o, 0, p + off, pdts[c], g, gdts[c], N, "w", NULL), OPTIM_EINVAL,
                           optim_errmsg(o), "memory of param 0 'w'");
            if (bad_g)
                ASSERT_ERR(optim_add_param_typed(o, 0, p, pdts[c], g + off, gdts[c], N, "w", NULL), OPTIM_EINVAL,
                           optim_errmsg(o), "gradient of param 0 'w'");
            ASSERT_INT(optim_param_count(o), ==, 0);
            ASSERT_OPT_OK(o, optim_add_param_typed(o, 0, p, pdts[c], g, gdts[c], N, "w", NULL));
            ASSERT_OPT_OK(o, optim_step(o));
            ASSERT_OPT_OK(o, optim_save_buffer(o, &before, &bsize));
            {
                void *pp[1];
                const void *gg[1];
                pp[0] = bad_p ? (void *)(p2 + off) : (void *)p2;
                gg[0] = bad_g ? (const void *)(g + off) : (const void *)g;
                ASSERT_INT(optim_step_with_data(o, 1, pp, gg), ==, OPTIM_EINVAL);
                ASSERT_INT(optim_rebind(o, 1, pp, gg), ==, OPTIM_EINVAL);
                ASSERT_INT(optim_set_param_data(o, 0, pp[0], gg[0]), ==, OPTIM_EINVAL);
                if (bad_g) ASSERT_INT(optim_set_grad_data(o, 0, gg[0]), ==, OPTIM_EINVAL);
                if (pdts[c] == OPTIM_FLOAT32 && gdts[c] == OPTIM_FLOAT32) {
                    float *fp[1];
                    const float *fg[1];
                    memcpy(&fp[0], &pp[0], sizeof fp[0]); /* the address as a binding passes it */
                    memcpy(&fg[0], &gg[0], sizeof fg[0]);
                    ASSERT_INT(optim_step_with(o, 1, fp, fg), ==, OPTIM_EINVAL);
                    ASSERT_INT(optim_set_param_ptrs(o, 0, fp[0], fg[0]), ==, OPTIM_EINVAL);
                }
                if (!strstr(optim_errmsg(o), "not aligned")) FAIL("message: %s", optim_errmsg(o));
            }
            ASSERT_OPT_OK(o, optim_save_buffer(o, &after, &asize));
            if (asize != bsize || memcmp(before, after, bsize) != 0) FAIL("a refused call changed the optimizer");
            ASSERT_OPT_OK(o, optim_step(o)); /* still bound to the memory it had */
            free(before);
            free(after);
            optim_free(o);

            /* The stateless level: p, g and the state slots. */
            {
                optim_state st;
                optim_dtype sdt = pdts[c] == OPTIM_FLOAT64 ? OPTIM_FLOAT64 : OPTIM_FLOAT32;
                size_t ss = optim_dtype_size(sdt);
                unsigned char sbuf[2][N * 8 + 16];
                int s;
                memset(&st, 0, sizeof st);
                for (s = 0; s < 2; s++) st.slot[s] = (float *)(void *)(sbuf[s] + (16 - (uintptr_t)sbuf[s] % 16) % 16);
                ASSERT_OK_MSG(optim_state_init_typed(&hp, N, sdt, &st, &err), err.message);
                ASSERT_ERR(optim_update_typed(&hp, N, bad_p ? p + off : p, pdts[c], bad_g ? g + off : g, gdts[c], &st,
                                              &err),
                           OPTIM_EINVAL, err.message, "not aligned");
                ASSERT_INT(st.step, ==, 0);
                if (off % ss) {
                    float *keep = st.slot[1];
                    st.slot[1] = (float *)(void *)((unsigned char *)keep + off);
                    ASSERT_ERR(optim_update_typed(&hp, N, p, pdts[c], g, gdts[c], &st, &err), OPTIM_EINVAL,
                               err.message, "slot 1");
                    ASSERT_ERR(optim_state_init_typed(&hp, N, sdt, &st, &err), OPTIM_EINVAL, err.message, "slot 1");
                    st.slot[1] = keep;
                }
                ASSERT_OK_MSG(optim_update_typed(&hp, N, p, pdts[c], g, gdts[c], &st, &err), err.message);
            }
        }
    }
    /* The clipping functions (float32 arrays). */
    {
        float a[N + 1], b[N];
        float *gr[2];
        size_t n[2] = {N, N};
        double norm = 0;
        int i;
        for (i = 0; i <= N; i++) a[i] = 1.0f;
        for (i = 0; i < N; i++) b[i] = 1.0f;
        gr[0] = b;
        gr[1] = (float *)(void *)((unsigned char *)a + 2);
        ASSERT_ERR(optim_grad_norm(2, (const float *const *)gr, n, 2.0, 0, &norm, &err), OPTIM_EINVAL, err.message,
                   "grads[1]");
        ASSERT_ERR(optim_clip_grad_norm(2, gr, n, 0.5, 2.0, 0, 0, &norm, &err), OPTIM_EINVAL, err.message,
                   "not aligned to 4 bytes");
        ASSERT_ERR(optim_clip_grad_value(2, gr, n, 0.5, 0, &err), OPTIM_EINVAL, err.message, "grads[1]");
        for (i = 0; i < N; i++)
            if (b[i] != 1.0f) FAIL("a refused clipping wrote grads[0][%d]", i);
    }
    return 0;
}

/* Checkpoints of float64 and bfloat16 parameters: a resumed run gives the
 * bits of the uninterrupted one; state types that do not match are refused. */
static int build_ex(optim **o, optim_dtype pdt, optim_dtype gdt, int sdt, void *p, void *g, size_t n,
                    optim_rule rule)
{
    optim_hparams hp;
    optim_dtype def;
    ASSERT_OK(optim_hparams_init(&hp, rule, NULL));
    if (rule == OPTIM_ADAM) hp.amsgrad = 1;
    if (rule == OPTIM_SGD) hp.momentum = 0.9;
    ASSERT_OK(optim_create(o, rule));
    ASSERT_OPT_OK(*o, optim_add_group(*o, &hp, NULL));
    ASSERT_OK(optim_dtypes_check(pdt, gdt, &def, NULL));
    ASSERT_OPT_OK(*o, optim_add_param_ex(*o, 0, p, pdt, g, gdt, n, sdt < 0 ? def : (optim_dtype)sdt, 0, "w", NULL));
    return 0;
}

static int build(optim **o, optim_dtype pdt, optim_dtype gdt, void *p, void *g, size_t n, optim_rule rule)
{
    return build_ex(o, pdt, gdt, -1, p, g, n, rule);
}

TEST_IMPL(dtype_checkpoint_exact)
{
    /* param, grad, state (-1: the pair's default) */
    static const int types[][3] = {{OPTIM_FLOAT64, OPTIM_FLOAT64, -1},      {OPTIM_BFLOAT16, OPTIM_BFLOAT16, -1},
                                   {OPTIM_FLOAT16, OPTIM_FLOAT16, -1},      {OPTIM_FLOAT32, OPTIM_BFLOAT16, -1},
                                   {OPTIM_BFLOAT16, OPTIM_BFLOAT16, OPTIM_BFLOAT16},
                                   {OPTIM_FLOAT16, OPTIM_FLOAT16, OPTIM_FLOAT16}};
    static const optim_rule rules[] = {OPTIM_ADAM, OPTIM_NADAM, OPTIM_SGD};
    const size_t n = 1031;
    size_t ty, ru;
    for (ty = 0; ty < sizeof types / sizeof types[0]; ty++)
        for (ru = 0; ru < sizeof rules / sizeof rules[0]; ru++) {
            optim_dtype pdt = (optim_dtype)types[ty][0], gdt = (optim_dtype)types[ty][1];
            const int sdt = types[ty][2];
            void *pa = t_alloc(pdt, n), *pb = t_alloc(pdt, n), *g = t_alloc(gdt, n);
            optim *a = NULL, *b = NULL;
            test_rng rng = {test_seed() ^ 0xcc};
            void *buf = NULL;
            size_t size = 0, i;
            int t, s;
            optim_checkpoint_info info;
            optim_error err;
            if (!pa || !pb || !g) FAIL("out of memory");
            for (i = 0; i < n; i++) t_set(pdt, pa, i, test_rng_normal(&rng));
            if (build_ex(&a, pdt, gdt, sdt, pa, g, n, rules[ru])) return 1;
            for (t = 0; t < 20; t++) {
                for (i = 0; i < n; i++) t_set(gdt, g, i, test_rng_normal(&rng));
                ASSERT_OPT_OK(a, optim_step(a));
                if (t == 9) {
                    ASSERT_OPT_OK(a, optim_save_buffer(a, &buf, &size));
                    memcpy(pb, pa, n * optim_dtype_size(pdt));
                }
            }
            /* Resume from step 10 in a new optimizer. */
            memset(&info, 0, sizeof info);
            if (build_ex(&b, pdt, gdt, sdt, pb, g, n, rules[ru])) return 1;
            ASSERT_OPT_OK(b, optim_load_buffer(b, buf, size, OPTIM_MATCH_NAME, "ck"));
            {
                test_rng again = {test_seed() ^ 0xcc};
                for (i = 0; i < n; i++) (void)test_rng_normal(&again);
                for (t = 0; t < 20; t++) {
                    for (i = 0; i < n; i++) t_set(gdt, g, i, test_rng_normal(&again));
                    if (t >= 10) ASSERT_OPT_OK(b, optim_step(b));
                }
            }
            if (!t_same(pdt, pa, pb, n, &i)) FAIL("%s: resumed %s parameter differs at %zu", optim_rule_name(rules[ru]),
                                                   optim_dtype_name(pdt), i);
            for (s = 0; s < optim_rule_slot_count(rules[ru]); s++) {
                void *da = NULL, *db = NULL;
                optim_dtype dt;
                ASSERT_OPT_OK(a, optim_state_slot_data(a, 0, s, &da, &dt, NULL));
                ASSERT_OPT_OK(b, optim_state_slot_data(b, 0, s, &db, NULL, NULL));
                if (!da) continue;
                if (!t_same(dt, da, db, n, &i))
                    FAIL("%s: resumed %s state %s differs at %zu", optim_rule_name(rules[ru]), optim_dtype_name(dt),
                         optim_rule_slot_name(rules[ru], s), i);
            }
            /* Half state loads into float32 state widened exactly, and back rounded
             * to nearest even (the tests' own conversions). */
            if (sdt >= 0) {
                void *pc = t_alloc(pdt, n), *buf2 = NULL;
                size_t size2 = 0;
                optim *c = NULL, *d = NULL;
                if (!pc) FAIL("out of memory");
                if (build_ex(&c, pdt, gdt, OPTIM_FLOAT32, pc, g, n, rules[ru])) return 1;
                ASSERT_OPT_OK(c, optim_load_buffer(c, buf, size, OPTIM_MATCH_NAME, "ck"));
                for (s = 0; s < optim_rule_slot_count(rules[ru]); s++) {
                    void *dc = NULL;
                    optim_dtype dt;
                    ASSERT_OPT_OK(c, optim_state_slot_data(c, 0, s, &dc, &dt, NULL));
                    if (!dc) continue;
                    ASSERT_INT(dt, ==, OPTIM_FLOAT32);
                    /* make the float32 state need rounding on the way back */
                    for (i = 0; i < n; i++) ((float *)dc)[i] = tfloat(tbits(((float *)dc)[i]) ^ (uint32_t)(i & 0x1fff));
                }
                ASSERT_OPT_OK(c, optim_save_buffer(c, &buf2, &size2));
                if (build_ex(&d, pdt, gdt, sdt, pc, g, n, rules[ru])) return 1;
                ASSERT_OPT_OK(d, optim_load_buffer(d, buf2, size2, OPTIM_MATCH_NAME, "ck"));
                for (s = 0; s < optim_rule_slot_count(rules[ru]); s++) {
                    void *dc = NULL, *dd = NULL;
                    ASSERT_OPT_OK(c, optim_state_slot_data(c, 0, s, &dc, NULL, NULL));
                    ASSERT_OPT_OK(d, optim_state_slot_data(d, 0, s, &dd, NULL, NULL));
                    if (!dc) continue;
                    for (i = 0; i < n; i++) {
                        const float x = ((float *)dc)[i];
                        const uint16_t want = sdt == OPTIM_BFLOAT16 ? t_bf16_from_float(x) : t_f16_from_float(x);
                        if (((uint16_t *)dd)[i] != want)
                            FAIL("%s: float32 state %s[%zu] = %a loaded as %s 0x%04x, not 0x%04x",
                                 optim_rule_name(rules[ru]), optim_rule_slot_name(rules[ru], s), i, (double)x,
                                 optim_dtype_name((optim_dtype)sdt), ((uint16_t *)dd)[i], want);
                    }
                }
                optim_free(c);
                optim_free(d);
                free(buf2);
                free(pc);
            }
            /* State of another type is refused, naming both. */
            if (pdt == OPTIM_FLOAT64 && rules[ru] != OPTIM_SGD) { /* plain SGD has no state */
                float *p32 = (float *)t_alloc(OPTIM_FLOAT32, n), *g32 = (float *)t_alloc(OPTIM_FLOAT32, n);
                optim *c = NULL;
                if (build(&c, OPTIM_FLOAT32, OPTIM_FLOAT32, p32, g32, n, rules[ru])) return 1;
                ASSERT_ERR(optim_load_buffer(c, buf, size, OPTIM_MATCH_NAME, "ck"), OPTIM_EMISMATCH, optim_errmsg(c),
                           "has float32 state in the optimizer, float64 in the checkpoint");
                optim_free(c);
                free(p32);
                free(g32);
            }
            (void)err;
            free(buf);
            optim_free(a);
            optim_free(b);
            free(pa);
            free(pb);
            free(g);
        }
    printf("  float64, bfloat16, float16 parameters, bfloat16 gradients, bfloat16/float16 state: resumed runs bit "
           "for bit; half state loaded into float32 state and back\n");
    return 0;
}

/* Thread counts: bounded when set, and a step never asks OpenMP for more
 * threads than its limit, the CPUs or the work. */
TEST_IMPL(threads_bounded)
{
    optim *o = NULL;
    int nt;
    ASSERT_OK(optim_create(&o, OPTIM_SGD));
    ASSERT_ERR(optim_set_threads(o, 100000), OPTIM_EINVAL, optim_errmsg(o),
               "threads = 100000 is above OPTIM_MAX_THREADS (1024)");
    ASSERT_ERR(optim_set_threads(o, -1), OPTIM_EINVAL, optim_errmsg(o), "threads = -1 is negative");
    ASSERT_OPT_OK(o, optim_set_threads(o, OPTIM_MAX_THREADS));
    ASSERT_INT(optim_get_threads(o), ==, OPTIM_MAX_THREADS);
    optim_free(o);
    nt = optim__threads_for((size_t)1 << 40, OPTIM_MAX_THREADS);
    ASSERT(nt >= 1 && nt <= OPTIM_MAX_THREADS);
#ifdef _OPENMP
    ASSERT_INT(nt, <=, omp_get_num_procs());
    ASSERT_INT(nt, <=, omp_get_thread_limit());
    ASSERT_INT(optim__threads_for((size_t)1 << 40, 0), <=, omp_get_max_threads());
    printf("  %d CPUs, thread limit %d: a huge step with %d threads asked for asks for %d\n", omp_get_num_procs(),
           omp_get_thread_limit(), OPTIM_MAX_THREADS, nt);
#endif
    ASSERT_INT(optim__threads_for(1000, 8), ==, 1);       /* small work: the caller's thread */
    ASSERT_INT(optim__threads_for(40000, 8), <=, 2);      /* one thread per 16K elements at most */
    ASSERT_INT(optim__threads_for((size_t)1 << 30, 1), ==, 1);
    return 0;
}

/* Every variant a rule declares has its instance in every compute type, and
 * none beyond; an optimizer whose path lacks the loop a step needs refuses
 * the step (and the options change, and the parameter) with
 * OPTIM_EUNSUPPORTED naming it, changing nothing: never a skipped update. */
TEST_IMPL(unsupported_variant_refused)
{
    const optim__kernels *kt = optim__kernels_get(OPTIM_ISA_SCALAR);
    static optim__kernels lacking; /* the scalar table without Adam's AMSGrad instances in float */
    static optim__loop_fn fns[64];
    optim *o = NULL;
    optim_hparams hp;
    float p[40], g[40], before[40], *m = NULL;
    int64_t step = -1;
    int r, ct, i;
    unsigned v;
    for (r = 1; r <= OPTIM_RULE_COUNT; r++)
        for (ct = 0; ct < OPTIM__NCTYPES && optim_rule_name((optim_rule)r); ct++) {
            const optim__loops *l = &kt->loops[r][ct];
            ASSERT(l->fns != NULL && l->nvariants > 0 && l->nvariants <= 32);
            for (v = 0; v < l->nvariants; v++) {
                ASSERT(optim__loop_get(kt, (optim_rule)r, (optim__ctype)ct, v, NULL, NULL) != NULL);
                ASSERT(optim__loop_get(kt, (optim_rule)r, (optim__ctype)ct, v | OPTIM__V_CLAMP, NULL, NULL) != NULL);
            }
            ASSERT(optim__loop_get(kt, (optim_rule)r, (optim__ctype)ct, l->nvariants, NULL, NULL) == NULL);
        }
    ASSERT(optim__loop_get(kt, (optim_rule)0, OPTIM__CT_F32, 0, NULL, NULL) == NULL);

    lacking = *kt;
    memcpy(fns, kt->loops[OPTIM_ADAM][OPTIM__CT_F32].fns, 2 * kt->loops[OPTIM_ADAM][OPTIM__CT_F32].nvariants * sizeof fns[0]);
    lacking.loops[OPTIM_ADAM][OPTIM__CT_F32].nvariants = 4; /* variants 4..7 (AMSGrad) missing */
    for (v = 0; v < 4; v++) fns[4 + v] = fns[8 + v];      /* clamp instances after the first four */
    lacking.loops[OPTIM_ADAM][OPTIM__CT_F32].fns = fns;
    ASSERT_OK(optim_hparams_init(&hp, OPTIM_ADAM, NULL));
    ASSERT_OK(optim_create(&o, OPTIM_ADAM));
    ASSERT_OPT_OK(o, optim_add_group(o, &hp, NULL));
    for (i = 0; i < 40; i++) {
        p[i] = before[i] = 0.1f * (float)i;
        g[i] = 0.5f;
    }
    ASSERT_OPT_OK(o, optim_add_param(o, 0, p, g, 40, "w", NULL));
    o->kt = &lacking;
    ASSERT_OPT_OK(o, optim_step(o)); /* AMSGrad off: variant 0 exists */
    memcpy(before, p, sizeof p);
    ASSERT_ERR(optim_group_set_hparam(o, 0, OPTIM_HP_AMSGRAD, 1), OPTIM_EUNSUPPORTED, optim_errmsg(o),
               "has no adam loop for variant 0x4 (float32 parameters, float32 gradients) of param 'w'");
    /* A step that reaches the missing variant anyway (the group changed behind the check) is refused
     * before anything changes. */
    o->groups[0].hp.amsgrad = 1;
    ASSERT_ERR(optim_step(o), OPTIM_EUNSUPPORTED, optim_errmsg(o),
               "optim_step: the scalar path has no adam loop for variant 0x4 (float32 parameters, float32 gradients) of "
               "param 0 'w'; nothing changed");
    ASSERT(memcmp(before, p, sizeof p) == 0);
    ASSERT_OPT_OK(o, optim_param_get_step(o, 0, &step));
    ASSERT_INT(step, ==, 1);
    ASSERT_INT(optim_step_count(o), ==, 1);
    ASSERT_ERR(optim_add_param(o, 0, g + 0, NULL, 0, "v", NULL), OPTIM_EUNSUPPORTED, optim_errmsg(o), "variant 0x4");
    o->groups[0].hp.amsgrad = 0;
    ASSERT_OPT_OK(o, optim_state_slot(o, 0, 0, &m, NULL));
    ASSERT_OPT_OK(o, optim_step(o));
    o->kt = kt;
    optim_free(o);
    return 0;
}

/* ---- Format 2 files still load -------------------------------------------------- */

static uint64_t le(const unsigned char *d, int bytes)
{
    uint64_t v = 0;
    int i;
    for (i = bytes - 1; i >= 0; i--) v = v << 8 | d[i];
    return v;
}

static void put_le(unsigned char *d, uint64_t v, int bytes)
{
    int i;
    for (i = 0; i < bytes; i++) d[i] = (unsigned char)(v >> (8 * i));
}

/* The format-2 file of a format-3 checkpoint of float32 state: the same
 * sections without the slot types of PARM (docs/CHECKPOINT.md), every
 * length and checksum recomputed. *out is malloc'ed. */
static int to_format2(const unsigned char *d, size_t size, unsigned char **out, size_t *out_size)
{
    unsigned char *o = (unsigned char *)malloc(size);
    size_t pos = 32, w = 32, sections = (size_t)le(d + 24, 4), k;
    if (!o) return -1;
    memcpy(o, d, 32);
    for (k = 0; k < sections; k++) {
        uint32_t tag = (uint32_t)le(d + pos, 4);
        size_t len = (size_t)le(d + pos + 8, 8), head = w, q, r;
        const unsigned char *pl = d + pos + 16;
        memcpy(o + w, d + pos, 16);
        w += 16;
        if (tag == ((uint32_t)'P' | (uint32_t)'A' << 8 | (uint32_t)'R' << 16 | (uint32_t)'M' << 24)) {
            uint64_t n;
            uint32_t ndim, mask, s;
            q = 8;
            q += 4 + (size_t)le(pl + q, 4); /* name */
            q += 4;                         /* group */
            n = le(pl + q, 8);
            q += 8;
            ndim = (uint32_t)le(pl + q + 1, 4);
            q += 5 + 8 * (size_t)ndim;
            q += 8 + 8 + 4;
            mask = (uint32_t)le(pl + q, 4);
            q += 4;
            memcpy(o + w, pl, q);
            w += q;
            for (s = 0; s < OPTIM_MAX_SLOTS; s++) {
                if (!((mask >> s) & 1u)) continue;
                if (le(pl + q, 4) != OPTIM_FLOAT32) return -1;
                q += 4;
                memcpy(o + w, pl + q, 4 * (size_t)n);
                w += 4 * (size_t)n;
                q += 4 * (size_t)n;
            }
            if (q != len) return -1;
        } else {
            memcpy(o + w, pl, len);
            w += len;
        }
        r = w - head - 16;
        put_le(o + head + 8, r, 8);
        put_le(o + w, optim__crc32c(0, o + head, 16 + r), 4);
        w += 4;
        pos += 16 + len + 4;
    }
    put_le(o + 8, 2, 4);
    put_le(o + 16, w + 12, 8);
    put_le(o + 28, optim__crc32c(0, o, 28), 4);
    put_le(o + w, optim__crc32c(0, o, w), 4);
    memcpy(o + w + 4, "OPTIMEND", 8);
    *out = o;
    *out_size = w + 12;
    return 0;
}

TEST_IMPL(checkpoint_format2_loads)
{
    float p[3][50], g[3][50];
    optim *a = NULL, *b = NULL;
    optim_hparams hp;
    unsigned char *f3 = NULL, *f2 = NULL, *again = NULL;
    size_t n3 = 0, n2 = 0, nagain = 0, i;
    int t;
    ASSERT_OK(optim_hparams_init(&hp, OPTIM_ADAM, NULL));
    hp.amsgrad = 1;
    ASSERT_OK(optim_create(&a, OPTIM_ADAM));
    ASSERT_OK(optim_create(&b, OPTIM_ADAM));
    ASSERT_OPT_OK(a, optim_add_group(a, &hp, NULL));
    ASSERT_OPT_OK(b, optim_add_group(b, &hp, NULL));
    for (i = 0; i < 3; i++) {
        memset(p[i], 0, sizeof p[i]);
        ASSERT_OPT_OK(a, optim_add_param(a, 0, p[i], g[i], 17 * i + 3, NULL, NULL));
        ASSERT_OPT_OK(b, optim_add_param(b, 0, p[i] + 0, NULL, 17 * i + 3, NULL, NULL));
    }
    for (t = 0; t < 5; t++) {
        for (i = 0; i < 150; i++) g[i / 50][i % 50] = (float)sin((double)(i + 7 * t));
        ASSERT_OPT_OK(a, optim_step(a));
    }
    ASSERT_OPT_OK(a, optim_save_buffer(a, (void **)&f3, &n3));
    ASSERT_INT(le(f3 + 8, 4), ==, 3);
    if (to_format2(f3, n3, &f2, &n2)) FAIL("the format-3 file is not as docs/CHECKPOINT.md says");
    ASSERT_INT(n2, ==, n3 - 4 * 3 * 3); /* three slots of three parameters lose their type */
    ASSERT_OPT_OK(b, optim_load_buffer(b, f2, n2, OPTIM_MATCH_NAME, "v2"));
    ASSERT_OPT_OK(b, optim_save_buffer(b, (void **)&again, &nagain));
    if (nagain != n3 || memcmp(again, f3, n3) != 0) FAIL("a format-2 file does not load to the state it holds");
    free(f3);
    free(f2);
    free(again);
    optim_free(a);
    optim_free(b);
    printf("  a format-2 file (no slot types) loads to the state it was written from\n");
    return 0;
}

/* Fused norm clipping of float64 gradients is torch's float64 clip_grad_norm_:
 * the norm in double (no float32 overflow), the factor (1 / (norm + 1e-6)) *
 * max_norm in double. Against an optimizer without clipping fed the
 * gradients scaled by that factor, computed here. */
TEST_IMPL(f64_norm_clipping)
{
    enum { T = 3, N = 300 };
    static const size_t n[T] = {7, N, 101};
    double pa[T][N], pb[T][N], g[T][N], gs[T][N];
    optim *a = NULL, *b = NULL;
    optim_hparams hp;
    test_rng rng = {test_seed() ^ 0xc11f};
    size_t i, j;
    int t, maximize;
    for (maximize = 0; maximize <= 1; maximize++) {
        ASSERT_OK(optim_hparams_init(&hp, OPTIM_ADAM, NULL));
        hp.maximize = maximize;
        hp.weight_decay = 0.1;
        ASSERT_OK(optim_create(&a, OPTIM_ADAM));
        ASSERT_OK(optim_create(&b, OPTIM_ADAM));
        ASSERT_OPT_OK(a, optim_add_group(a, &hp, NULL));
        ASSERT_OPT_OK(b, optim_add_group(b, &hp, NULL));
        ASSERT_OPT_OK(a, optim_set_clip_grad_norm(a, 1.5, 2.0));
        for (i = 0; i < T; i++) {
            for (j = 0; j < n[i]; j++) pa[i][j] = pb[i][j] = test_rng_normal(&rng);
            ASSERT_OPT_OK(a, optim_add_param_typed(a, 0, pa[i], OPTIM_FLOAT64, g[i], OPTIM_FLOAT64, n[i], NULL, NULL));
            ASSERT_OPT_OK(b, optim_add_param_typed(b, 0, pb[i], OPTIM_FLOAT64, gs[i], OPTIM_FLOAT64, n[i], NULL, NULL));
        }
        for (t = 0; t < 30; t++) {
            double sum = 0, norm, factor, worst = 0;
            for (i = 0; i < T; i++)
                for (j = 0; j < n[i]; j++) {
                    g[i][j] = test_rng_normal(&rng) * (t % 3 == 0 ? 1e-3 : 1.0); /* clipped, and not */
                    sum += g[i][j] * g[i][j];
                }
            norm = sqrt(sum);
            factor = (1.0 / (norm + 1e-6)) * 1.5;
            if (factor > 1.0) factor = 1.0;
            for (i = 0; i < T; i++)
                for (j = 0; j < n[i]; j++) gs[i][j] = g[i][j] * factor;
            ASSERT_OPT_OK(a, optim_step(a));
            ASSERT_OPT_OK(b, optim_step(b));
            if (fabs(optim_last_grad_norm(a) - norm) > 1e-13 * norm)
                FAIL("step %d: norm %.17g vs %.17g", t, optim_last_grad_norm(a), norm);
            for (i = 0; i < T; i++)
                for (j = 0; j < n[i]; j++) {
                    double e = fabs(pa[i][j] - pb[i][j]) / (fabs(pb[i][j]) + 1e-3);
                    if (e > worst) worst = e;
                }
            if (worst > 1e-13) FAIL("maximize %d, step %d: fused float64 clipping off by %.3g", maximize, t, worst);
        }
        optim_free(a);
        optim_free(b);
    }
    printf("  float64 gradients: fused norm clipping is the float64 clip_grad_norm_ (norm and factor in double)\n");
    return 0;
}

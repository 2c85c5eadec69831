/* complex_math.h: complex arithmetic over (re, im) pairs of the compute type
 * R, for the rules of complex_list.h; included by the kernels once per
 * compute type after rule_math.h (no include guard). Each operation rounds as
 * its plain formula in R does (no fused multiply-adds: -ffp-contract=off), so
 * every CPU path gives the same bits; they are the textbook forms, not
 * torch's own (c10::complex, its vectorized forms), so the results agree
 * with torch's to rounding, not bit for bit. */

#undef optim__hypot
#undef optim__copysign
#if OPTIM__R_F64
#  define optim__hypot hypot
#  define optim__copysign copysign
#else
#  define optim__hypot hypotf
#  define optim__copysign copysignf
#endif

/* (a + bi)(c + di) = (ac - bd) + (ad + bc)i */
OPTIM_INLINE void OPTIM__T(optim__cmul)(R *re, R *im, R a, R b, R c, R d)
{
    *re = a * c - b * d;
    *im = a * d + b * c;
}

/* (a + bi) / (c + di), Smith's algorithm (no overflow of c^2 + d^2). */
OPTIM_INLINE void OPTIM__T(optim__cdiv)(R *re, R *im, R a, R b, R c, R d)
{
    if (optim__fabs(c) >= optim__fabs(d)) {
        R r = d / c, den = c + d * r;
        *re = (a + b * r) / den;
        *im = (b - a * r) / den;
    } else {
        R r = c / d, den = c * r + d;
        *re = (a * r + b) / den;
        *im = (b * r - a) / den;
    }
}

/* The principal square root of x + yi (the branch cut on the negative real
 * axis; the sign of the imaginary part follows y, a signed zero included, as
 * C99's csqrt). */
OPTIM_INLINE void OPTIM__T(optim__csqrt)(R *re, R *im, R x, R y)
{
    R t;
    if (x == 0 && y == 0) {
        *re = 0;
        *im = y;
        return;
    }
    t = optim__sqrt((optim__fabs(x) + optim__hypot(x, y)) * (R)0.5);
    if (x >= 0) {
        *re = t;
        *im = y / (t + t);
    } else {
        *re = optim__fabs(y) / (t + t);
        *im = optim__copysign(t, y);
    }
}

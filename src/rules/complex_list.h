/* complex_list.h: the rules with complex arithmetic for complex parameters
 * (OPTIM_PARAM_COMPLEX), as torch.optim 1.13 computes them: RAdam and NAdam
 * square the complex gradient into their second moment, take its complex
 * square root and divide in complex numbers (every other rule is stepped by
 * torch, and by liboptim, as the real view of a complex parameter). Each
 * listed rule's header defines, in its math section,
 *   optim__<name>_celem(R *p, const R *g, R (*s)[2], c, k, V)
 * over one complex element: p[0], p[1] and g[0], g[1] its real and imaginary
 * parts, s[j] slot j's pair. The kernels generate a loop over (re, im) pairs
 * and one instance per variant of it (kernels_math.h), in the path tables'
 * cloops. X(ID, name): the OPTIM_<ID> enum value and the rule's name. */
#ifndef OPTIM_RULE_COMPLEX_LIST_H
#define OPTIM_RULE_COMPLEX_LIST_H

#define OPTIM__COMPLEX_RULE_LIST(X) \
    X(RADAM, radam)                 \
    X(NADAM, nadam)

#endif

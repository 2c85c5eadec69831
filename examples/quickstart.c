/* examples/quickstart.c: built and run by the tests, so this quick start cannot rot. */
#include <optim.h>
#include <stdio.h>

/* A toy loss: f(w) = sum_i (w_i - target_i)^2, minimised at w = target. */
static const float target[3] = {1.0f, -2.0f, 0.5f};

int main(void)
{
    float w[3] = {0}, grad[3];   /* your parameters and gradients: you own the memory */
    optim *opt;
    optim_hparams hp;
    int step, rc;

    if (optim_create(&opt, OPTIM_ADAM) != OPTIM_OK) return 1;
    optim_hparams_init(&hp, OPTIM_ADAM, NULL); /* torch.optim.Adam's defaults */
    hp.lr = 0.05;
    if (optim_add_group(opt, &hp, NULL) != OPTIM_OK ||          /* group 0 */
        optim_add_param(opt, 0, w, grad, 3, "w", NULL) != OPTIM_OK) {
        fprintf(stderr, "%s\n", optim_errmsg(opt));
        optim_free(opt);
        return 1;
    }
    for (step = 0; step < 500; step++) {
        int i;
        for (i = 0; i < 3; i++) grad[i] = 2.0f * (w[i] - target[i]); /* fill the gradient... */
        if (optim_step(opt) != OPTIM_OK) break;                       /* ...and step: w is updated in place */
        if (step == 299) optim_group_set_hparam(opt, 0, OPTIM_HP_LR, 0.005); /* lr can change between steps */
    }
    printf("w = %.4f %.4f %.4f after %lld steps\n", w[0], w[1], w[2], (long long)optim_step_count(opt));

    /* Errors: a status code, and a message naming the parameter and the value. Nothing changed. */
    rc = optim_group_set_hparam(opt, 0, OPTIM_HP_BETA1, 1.5);
    printf("%s: %s\n", optim_err_name(rc), optim_errmsg(opt));

    optim_free(opt);
    return 0;
}

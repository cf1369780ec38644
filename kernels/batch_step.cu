// fastbp's per-batch CUDA kernels for the cupy backend (cupy_backend.py): the batched epoch
// (CupyBackend._batched_epoch) and the generic per-batch path (forward, output_delta, loss, update
// ...) both launch these; the products go to cuBLAS, everything between them is one of these
// launches, so each piece of elementwise maths has one CUDA copy. Rendered with the math section
// of fused_epoch.cu in front (activations, losses, the optimisers' rule) and the types substituted:
typedef ${T} T;    // the network's float type
typedef ${XT} XT;  // the stored inputs' type

#define FB_GRID_STRIDE(e, total) \
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < (total); \
         e += (long long)gridDim.x * blockDim.x)

// out[s, :] = X[idx[s], :] * scale (inputs) and Y[idx[s], :] (targets)
extern "C" __global__ void gather_inputs(const XT *X, const long long *idx, long long total, int n,
                                         double scale, T *out) {
    FB_GRID_STRIDE(e, total) {
        const long long s = e / n;
        out[e] = T(X[idx[s] * n + (e - s * n)]) * T(scale);
    }
}
extern "C" __global__ void gather_targets(const T *Y, const long long *idx, long long total, int n, T *out) {
    FB_GRID_STRIDE(e, total) {
        const long long s = e / n;
        out[e] = Y[idx[s] * n + (e - s * n)];
    }
}

// z += b (row-broadcast), a = f(z)
extern "C" __global__ void bias_act(T *z, const T *b, T *a, long long total, int n, int code, double slope) {
    FB_GRID_STRIDE(e, total) {
        const T v = z[e] + b[e % n];
        z[e] = v;
        a[e] = fb_activate(v, code, T(slope));
    }
}

// the output deltas d = dL/da * f'(z) (a - y where the derivative cancels), and, where
// `accumulate`, each element's loss term added to loss_acc (one slot per element of a full batch,
// summed once per epoch: no atomics, the same sum every run)
extern "C" __global__ void out_delta(const T *z, const T *a, const T *y, T *d, double *loss_acc, int accumulate,
                                     long long total, int n, int act, int loss, int cancel, double slope) {
    FB_GRID_STRIDE(e, total) {
        const T av = a[e], yv = y[e];
        d[e] = cancel ? av - yv : fb_loss_grad(av, yv, loss, n) * fb_dact(z[e], av, act, T(slope));
        if (accumulate) loss_acc[e] += fb_loss_term(av, yv, loss);
    }
}

// g = dL/da (before a softmax's backward pass, which is done on whole rows elsewhere)
extern "C" __global__ void loss_grad(const T *a, const T *y, T *g, long long total, int n, int loss) {
    FB_GRID_STRIDE(e, total) g[e] = fb_loss_grad(a[e], y[e], loss, n);
}

// each element's loss term, in double (summed by the caller; mse: still to be divided by n)
extern "C" __global__ void loss_terms(const T *a, const T *y, double *terms, long long total, int loss) {
    FB_GRID_STRIDE(e, total) terms[e] = fb_loss_term(a[e], y[e], loss);
}

// d = g * f'(z): the deltas of a hidden layer from dL/da
extern "C" __global__ void act_back(const T *g, const T *z, const T *a, T *d, long long total, int code,
                                    double slope) {
    FB_GRID_STRIDE(e, total) d[e] = g[e] * fb_dact(z[e], a[e], code, T(slope));
}

// Every trainable parameter's optimiser step in one launch, by the rule of the math section
// (fb_update): blockIdx.y picks a row of `table` (parameter, gradient and state addresses, element
// count, 1 if weight decay applies); `opt`, `hp`: the optimiser's code and hyperparameters on the
// device, `scale`: the factor of the summed gradients (1/m for mean gradients), `k`: the batch's
// index in the epoch (Adam's step).
extern "C" __global__ void update_all(const long long *table, int opt, const double *hp, double scale,
                                      long long k) {
    const long long *row = table + 5 * blockIdx.y;
    T *p = reinterpret_cast<T *>(row[0]);
    const T *g = reinterpret_cast<const T *>(row[1]);
    T *s = reinterpret_cast<T *>(row[2]);
    const long long count = row[3];
    const bool decayed = row[4] != 0;
    const fb_rule<T> rule = fb_rule_for<T>(opt, hp, scale, k);
    FB_GRID_STRIDE(e, count) fb_update(rule, p[e], g[e], s + e, count, decayed);
}

// One parameter's optimiser step (the per-batch path), by the same rule.
extern "C" __global__ void update_one(T *p, const T *g, T *s, long long count, int decayed, int opt,
                                      const double *hp, double scale) {
    const fb_rule<T> rule = fb_rule_for<T>(opt, hp, scale, 0);
    FB_GRID_STRIDE(e, count) fb_update(rule, p[e], g[e], s + e, count, decayed != 0);
}

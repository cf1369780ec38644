// fastbp's per-batch CUDA kernels for the cupy backend's batched epoch (cupy_backend.py,
// CupyBackend._batched_epoch): the products go to cuBLAS, everything between them is one of these
// launches. Rendered with the math section of fused_epoch.cu in front and the types substituted:
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

// the output deltas d = dL/da * f'(z) (a - y where the derivative cancels), and each element's
// loss term added to loss_acc (one slot per element of a full batch, summed once per epoch: no
// atomics, the same sum every run)
extern "C" __global__ void out_delta(const T *z, const T *a, const T *y, T *d, double *loss_acc,
                                     long long total, int n, int act, int loss, int cancel, double slope) {
    FB_GRID_STRIDE(e, total) {
        const T av = a[e], yv = y[e];
        d[e] = cancel ? av - yv : fb_loss_grad(av, yv, loss, n) * fb_dact(z[e], av, act, T(slope));
        loss_acc[e] += fb_loss_term(av, yv, loss);
    }
}

// d = g * f'(z): the deltas of a hidden layer from dL/da
extern "C" __global__ void act_back(const T *g, const T *z, const T *a, T *d, long long total, int code,
                                    double slope) {
    FB_GRID_STRIDE(e, total) d[e] = g[e] * fb_dact(z[e], a[e], code, T(slope));
}

// Every trainable parameter's SGD step in one launch: blockIdx.y picks a row of `table`
// (parameter, gradient and velocity addresses, element count, 1 if weight decay applies), as the
// reference's sgd_update: u = step*g + decay*p; then p -= u, or v = mu*v - u; p += v.
extern "C" __global__ void sgd_all(const long long *table, double step, double mu, double decay) {
    const long long *row = table + 5 * blockIdx.y;
    T *p = reinterpret_cast<T *>(row[0]);
    const T *g = reinterpret_cast<const T *>(row[1]);
    T *v = reinterpret_cast<T *>(row[2]);
    const long long count = row[3];
    const T st = T(step), m_u = T(mu), dec = row[4] ? T(decay) : T(0);
    FB_GRID_STRIDE(e, count) {
        const T u = st * g[e] + dec * p[e];
        if (mu > 0.0) {
            const T vv = m_u * v[e] - u;
            v[e] = vv;
            p[e] += vv;
        } else {
            p[e] -= u;
        }
    }
}

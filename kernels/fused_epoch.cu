// fastbp's CUDA source, a template rendered by cupy_backend.py (render_fused_epoch, math_preamble).
// Placeholders (a dollar sign and a name in braces) are substituted as text before compiling.
//
// Two parts:
//  1. the math section (between the BEGIN/END MATH lines): activations, their derivatives and the
//     losses as templates over the float type. It is also the preamble of the backend's
//     elementwise kernels, so the fused and the per-batch paths share one definition.
//  2. fused_epoch: one whole epoch of mini-batch SGD for a two-layer perceptron (one hidden layer),
//     run by ONE thread block. Both weight matrices and the biases live in shared memory for the
//     whole epoch; each mini-batch's gather, forward, loss, backward and update are done in
//     sequence, separated by __syncthreads(); the weights go back to global memory at the end.
//     Launched once per epoch: no round trip to the host between mini-batches.
//
// The arithmetic follows the NumPy reference (kernels/numpy_backend.py) step by step, in the
// network's float type T; only the order of the terms of each sum differs.

// ---- BEGIN MATH ----
#define FB_SIGMOID 0
#define FB_TANH 1
#define FB_RELU 2
#define FB_LEAKY_RELU 3
#define FB_IDENTITY 4
#define FB_SOFTMAX 5
#define FB_QUADRATIC 0
#define FB_MSE 1
#define FB_BCE 2
#define FB_CE 3
#define FB_TINY 1e-12  // the reference's clip in the cross-entropy losses

__device__ __forceinline__ float fb_exp(float x) { return expf(x); }
__device__ __forceinline__ double fb_exp(double x) { return exp(x); }
__device__ __forceinline__ float fb_tanh(float x) { return tanhf(x); }
__device__ __forceinline__ double fb_tanh(double x) { return tanh(x); }
template <typename F> __device__ __forceinline__ F fb_min(F a, F b) { return b < a ? b : a; }
template <typename F> __device__ __forceinline__ F fb_max(F a, F b) { return b > a ? b : a; }

// f(z) of an elementwise activation (softmax is done row by row elsewhere).
template <typename F>
__device__ __forceinline__ F fb_activate(F z, int code, F slope) {
    if (code == FB_SIGMOID) {  // 1 / (1 + exp(-z)), without overflow for large |z|
        F e = fb_exp(z < F(0) ? z : -z);
        return z >= F(0) ? F(1) / (F(1) + e) : e / (F(1) + e);
    }
    if (code == FB_TANH) return fb_tanh(z);
    if (code == FB_RELU) return z > F(0) ? z : F(0);
    if (code == FB_LEAKY_RELU) return z > F(0) ? z : slope * z;
    return z;  // identity
}

// f'(z), from z and a = f(z) (relu: 0 at z = 0; leaky_relu: the slope at z = 0).
template <typename F>
__device__ __forceinline__ F fb_dact(F z, F a, int code, F slope) {
    if (code == FB_SIGMOID) return a * (F(1) - a);
    if (code == FB_TANH) return F(1) - a * a;
    if (code == FB_RELU) return z > F(0) ? F(1) : F(0);
    if (code == FB_LEAKY_RELU) return z > F(0) ? F(1) : slope;
    return F(1);  // identity
}

// dL/da of one output (n_out: outputs per sample, for mse).
template <typename F>
__device__ __forceinline__ F fb_loss_grad(F a, F y, int loss, int n_out) {
    if (loss == FB_QUADRATIC) return a - y;
    if (loss == FB_MSE) return F(2) * (a - y) / F(n_out);
    if (loss == FB_BCE) {
        F c = fb_min(fb_max(a, F(FB_TINY)), F(1.0 - FB_TINY));
        return (c - y) / (c * (F(1) - c));
    }
    return -y / fb_max(a, F(FB_TINY));  // cross_entropy
}

// One output's term of the per-sample loss, in double (mse: still to be divided by n_out).
template <typename F>
__device__ __forceinline__ double fb_loss_term(F a, F y, int loss) {
    if (loss == FB_QUADRATIC || loss == FB_MSE) {
        double d = double(a) - double(y);
        return loss == FB_QUADRATIC ? 0.5 * d * d : d * d;
    }
    if (loss == FB_BCE) {
        double c = double(fb_min(fb_max(a, F(FB_TINY)), F(1.0 - FB_TINY)));
        return -(double(y) * log(c) + (1.0 - double(y)) * log(1.0 - c));
    }
    return -double(y) * log(double(fb_max(a, F(FB_TINY))));  // cross_entropy
}
// ---- END MATH ----

typedef ${T} T;    // the network's float type
typedef ${XT} XT;  // the stored inputs' type (unsigned char: scaled here by `scale`)

#define N0 ${N0}   // inputs
#define H ${H}     // hidden units
#define K ${K}     // outputs
#define BS ${BS}   // batch size (the last batch of an epoch may be smaller)
#define SB ${SB}   // samples per register block in the hidden layer's forward pass (<= 32)
#define NT ${NT}   // threads in the block (a multiple of 32)
#define HID_ACT ${HID_ACT}
#define OUT_ACT ${OUT_ACT}
#define LOSS ${LOSS}
#define CANCEL ${CANCEL}  // sigmoid + binary_cross_entropy or softmax + cross_entropy: delta = a - y
#define NW (NT / 32)

// frozen: bit 0 W0, bit 1 b0, bit 2 W1, bit 3 b1 (not updated)
#define FROZEN_W0 1
#define FROZEN_B0 2
#define FROZEN_W1 4
#define FROZEN_B1 8

// One SGD step of one parameter, as the reference's sgd_update: u = step*g + decay*p, then
// p -= u, or with momentum v = mu*v - u; p += v (v in global memory).
__device__ __forceinline__ void sgd_step(T &p, T g, T *v, T step, T decay, T mu, bool momentum) {
    T u = step * g + decay * p;
    if (momentum) {
        T vv = mu * *v - u;
        *v = vv;
        p += vv;
    } else {
        p -= u;
    }
}

// Dynamic shared memory, in units of T: w0 (H x N0, W0 transposed: row j holds the weights into
// hidden unit j, so a warp reads it along i without bank conflicts), w1 (H x K, as W1), c0 (H),
// c1 (K), then the batch's xs (BS x N0, scaled inputs), ys (BS x K), z0/a0/d0 (BS x H) and
// z1/a1/d1 (BS x K). fused_epoch_shared_bytes() in cupy_backend.py computes the same total.
extern "C" __global__ void __launch_bounds__(NT)
fused_epoch(const XT *__restrict__ X,          // (n_samples, N0) training inputs
            const T *__restrict__ Y,           // (n_samples, K) targets
            const long long *__restrict__ order,  // (n,) the epoch's sample order
            const int n, const double scale,   // samples in the epoch; input scale (1/255 or 1)
            T *W0, T *b0, T *W1, T *b1,        // the layers' arrays: (N0, H), (H,), (H, K), (K,)
            T *VW0, T *vb0, T *VW1, T *vb1,    // their velocities (only read with momentum)
            const double lr, const double mu, const double decay,
            const int mean, const int frozen,
            const double slope_h, const double slope_o,
            double *loss_parts)                // (NT,) each thread's sum of per-sample losses
{
    extern __shared__ __align__(16) unsigned char fb_shared[];
    T *w0 = reinterpret_cast<T *>(fb_shared);
    T *w1 = w0 + H * N0;
    T *c0 = w1 + H * K;
    T *c1 = c0 + H;
    T *xs = c1 + K;
    T *ys = xs + BS * N0;
    T *z0 = ys + BS * K;
    T *a0 = z0 + BS * H;
    T *d0 = a0 + BS * H;
    T *z1 = d0 + BS * H;
    T *a1 = z1 + BS * K;
    T *d1 = a1 + BS * K;

    const int tid = threadIdx.x;
    const int lane = tid & 31;
    const int warp = tid >> 5;
    const T hs = T(slope_h), os = T(slope_o), sc = T(scale);
    const T dec = T(decay), m_u = T(mu);
    const bool momentum = mu > 0.0;
    double my_loss = 0.0;

    // the parameters into shared memory, once per epoch
    for (int e = tid; e < H * N0; e += NT) {
        const int j = e / N0, i = e - j * N0;
        w0[e] = W0[(long long)i * H + j];
    }
    for (int e = tid; e < H * K; e += NT) w1[e] = W1[e];
    for (int j = tid; j < H; j += NT) c0[j] = b0[j];
    for (int k = tid; k < K; k += NT) c1[k] = b1[k];
    __syncthreads();

    for (int start = 0; start < n; start += BS) {
        const int m = min(BS, n - start);

        // 1. gather the batch: rows order[start + s], inputs scaled to T (the reference's gather)
        for (int e = tid; e < m * N0; e += NT) {
            const int s = e / N0, i = e - s * N0;
            xs[e] = T(X[order[start + s] * N0 + i]) * sc;
        }
        for (int e = tid; e < m * K; e += NT) {
            const int s = e / K, k = e - s * K;
            ys[e] = Y[order[start + s] * K + k];
        }
        __syncthreads();

        // 2. hidden layer: z0 = xs . w0[j] + c0[j]; a warp per unit j, its lanes splitting the
        //    inputs, SB samples per pass (each loaded weight serves SB samples)
        for (int j = warp; j < H; j += NW) {
            const T *wj = w0 + j * N0;
            for (int s0 = 0; s0 < m; s0 += SB) {
                T acc[SB];
#pragma unroll
                for (int u = 0; u < SB; u++) acc[u] = T(0);
                for (int i = lane; i < N0; i += 32) {
                    const T w = wj[i];
#pragma unroll
                    for (int u = 0; u < SB; u++)
                        if (s0 + u < m) acc[u] += w * xs[(s0 + u) * N0 + i];
                }
                T mine = T(0);
#pragma unroll
                for (int u = 0; u < SB; u++) {
#pragma unroll
                    for (int o = 16; o > 0; o >>= 1) acc[u] += __shfl_xor_sync(0xffffffffu, acc[u], o);
                    if (lane == u) mine = acc[u];
                }
                const int s = s0 + lane;
                if (lane < SB && s < m) {
                    const T z = mine + c0[j];
                    z0[s * H + j] = z;
                    a0[s * H + j] = fb_activate(z, HID_ACT, hs);
                }
            }
        }
        __syncthreads();

        // 3. output layer pre-activations: a thread per (sample, output)
        for (int e = tid; e < m * K; e += NT) {
            const int s = e / K, k = e - s * K;
            T z = T(0);
            for (int j = 0; j < H; j++) z += a0[s * H + j] * w1[j * K + k];
            z1[e] = z + c1[k];
        }
        __syncthreads();

        // 4. output activation, loss and dL/dz: a thread per sample
        if (tid < m) {
            const T *z = z1 + tid * K;
            const T *y = ys + tid * K;
            T *a = a1 + tid * K;
            T *d = d1 + tid * K;
            if (OUT_ACT == FB_SOFTMAX) {
                T mx = z[0];
                for (int k = 1; k < K; k++) mx = fb_max(mx, z[k]);
                T total = T(0);
                for (int k = 0; k < K; k++) {
                    a[k] = fb_exp(z[k] - mx);
                    total += a[k];
                }
                for (int k = 0; k < K; k++) a[k] = a[k] / total;
            } else {
                for (int k = 0; k < K; k++) a[k] = fb_activate(z[k], OUT_ACT, os);
            }
            double value = 0.0;
            for (int k = 0; k < K; k++) value += fb_loss_term(a[k], y[k], LOSS);
            my_loss += LOSS == FB_MSE ? value / K : value;
            if (CANCEL) {
                for (int k = 0; k < K; k++) d[k] = a[k] - y[k];
            } else if (OUT_ACT == FB_SOFTMAX) {
                T dot = T(0);
                for (int k = 0; k < K; k++) {
                    d[k] = fb_loss_grad(a[k], y[k], LOSS, K);
                    dot += d[k] * a[k];
                }
                for (int k = 0; k < K; k++) d[k] = a[k] * (d[k] - dot);
            } else {
                for (int k = 0; k < K; k++) d[k] = fb_loss_grad(a[k], y[k], LOSS, K) * fb_dact(z[k], a[k], OUT_ACT, os);
            }
        }
        __syncthreads();

        // 5. hidden deltas d0 = (d1 . w1[j]) * f'(z0), with w1 before its update
        for (int e = tid; e < m * H; e += NT) {
            const int s = e / H, j = e - s * H;
            T g = T(0);
            for (int k = 0; k < K; k++) g += d1[s * K + k] * w1[j * K + k];
            d0[e] = g * fb_dact(z0[e], a0[e], HID_ACT, hs);
        }
        __syncthreads();

        // 6. updates from the summed gradients: dW0 = xs^T d0, db0 = sum d0, dW1 = a0^T d1, db1 = sum d1
        const T step = T(mean ? lr / m : lr);
        if (!(frozen & FROZEN_W0)) {
            for (int e = tid; e < H * N0; e += NT) {
                const int j = e / N0, i = e - j * N0;
                T g = T(0);
                for (int s = 0; s < m; s++) g += xs[s * N0 + i] * d0[s * H + j];
                sgd_step(w0[e], g, VW0 + (long long)i * H + j, step, dec, m_u, momentum);
            }
        }
        if (!(frozen & FROZEN_W1)) {
            for (int e = tid; e < H * K; e += NT) {
                const int j = e / K, k = e - j * K;
                T g = T(0);
                for (int s = 0; s < m; s++) g += a0[s * H + j] * d1[s * K + k];
                sgd_step(w1[e], g, VW1 + e, step, dec, m_u, momentum);
            }
        }
        if (!(frozen & FROZEN_B0)) {
            for (int j = tid; j < H; j += NT) {
                T g = T(0);
                for (int s = 0; s < m; s++) g += d0[s * H + j];
                sgd_step(c0[j], g, vb0 + j, step, T(0), m_u, momentum);
            }
        }
        if (!(frozen & FROZEN_B1)) {
            for (int k = tid; k < K; k += NT) {
                T g = T(0);
                for (int s = 0; s < m; s++) g += d1[s * K + k];
                sgd_step(c1[k], g, vb1 + k, step, T(0), m_u, momentum);
            }
        }
        __syncthreads();
    }

    // the parameters back to the layers' arrays
    for (int e = tid; e < H * N0; e += NT) {
        const int j = e / N0, i = e - j * N0;
        W0[(long long)i * H + j] = w0[e];
    }
    for (int e = tid; e < H * K; e += NT) W1[e] = w1[e];
    for (int j = tid; j < H; j += NT) b0[j] = c0[j];
    for (int k = tid; k < K; k += NT) b1[k] = c1[k];
    loss_parts[tid] = my_loss;
}

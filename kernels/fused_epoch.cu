// fastbp's CUDA source, a template rendered by cupy_backend.py (render_fused_epoch, math_preamble).
// Placeholders (a dollar sign and a name in braces) are substituted as text before compiling.
//
// Two parts:
//  1. the math section (between the BEGIN/END MATH lines): activations, their derivatives, the
//     losses and the optimisers' update rule as templates over the float type. It is also the
//     preamble of batch_step.cu (the batched epoch's and the per-batch path's kernels), so every
//     CUDA path shares one definition of each.
//  2. fused_epoch: one whole epoch of mini-batch training for a two-layer perceptron (one hidden layer),
//     run by ONE thread block. Both weight matrices and the biases live in shared memory for the
//     whole epoch; each mini-batch's gather, forward, loss, backward and update are done in
//     sequence, separated by __syncthreads(); the weights go back to global memory at the end.
//     Launched once per epoch: no round trip to the host between mini-batches. An ensemble's
//     members share the launch, a block each (blockIdx.x: the member; each its own parameters,
//     optimiser state, sample order, hyperparameters and frozen bits, through per-member tables).
//
// The arithmetic follows the NumPy reference (kernels/numpy_backend.py) step by step, in the
// network's float type T; only the order of the terms of each sum differs.

// ---- BEGIN MATH ----
// The activation codes (FB_SIGMOID ...), loss codes (FB_QUADRATIC ...), the cross-entropy losses'
// clip per dtype (FB_CLIP_F32, FB_CLIP_F64), the optimiser codes (FB_OPT_SGD ...) and the indices
// of the hyperparameter vector (FB_HP_LR ...): #define lines rendered from the one table, kernels/ops.py
${OPS_DEFINES}

__device__ __forceinline__ float fb_exp(float x) { return expf(x); }
__device__ __forceinline__ double fb_exp(double x) { return exp(x); }
__device__ __forceinline__ float fb_tanh(float x) { return tanhf(x); }
__device__ __forceinline__ double fb_tanh(double x) { return tanh(x); }
template <typename F> __device__ __forceinline__ F fb_min(F a, F b) { return b < a ? b : a; }
template <typename F> __device__ __forceinline__ F fb_max(F a, F b) { return b > a ? b : a; }
// outputs clipped to [c, 1 - c] in their own type: 1 - c must be representable (not 1.0f)
template <typename F> __device__ __forceinline__ F fb_clip() { return F(sizeof(F) == 4 ? FB_CLIP_F32 : FB_CLIP_F64); }

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
    if (code == FB_EXP) return fb_exp(z);
    return z;  // identity
}

// f'(z), from z and a = f(z) (relu: 0 at z = 0; leaky_relu: the slope at z = 0).
template <typename F>
__device__ __forceinline__ F fb_dact(F z, F a, int code, F slope) {
    if (code == FB_SIGMOID) return a * (F(1) - a);
    if (code == FB_TANH) return F(1) - a * a;
    if (code == FB_RELU) return z > F(0) ? F(1) : F(0);
    if (code == FB_LEAKY_RELU) return z > F(0) ? F(1) : slope;
    if (code == FB_EXP) return a;
    return F(1);  // identity
}

// dL/da of one output (n_out: outputs per sample, for mse).
template <typename F>
__device__ __forceinline__ F fb_loss_grad(F a, F y, int loss, int n_out) {
    if (loss == FB_QUADRATIC) return a - y;
    if (loss == FB_MSE) return F(2) * (a - y) / F(n_out);
    if (loss == FB_BCE) {
        F c = fb_min(fb_max(a, fb_clip<F>()), F(1) - fb_clip<F>());
        return (c - y) / (c * (F(1) - c));
    }
    if (loss == FB_POISSON) return F(1) - y / fb_max(a, fb_clip<F>());
    return -y / fb_max(a, fb_clip<F>());  // cross_entropy
}

// One output's term of the per-sample loss, in double (mse: still to be divided by n_out).
template <typename F>
__device__ __forceinline__ double fb_loss_term(F a, F y, int loss) {
    if (loss == FB_QUADRATIC || loss == FB_MSE) {
        double d = double(a) - double(y);
        return loss == FB_QUADRATIC ? 0.5 * d * d : d * d;
    }
    if (loss == FB_BCE) {
        double c = double(fb_min(fb_max(a, fb_clip<F>()), F(1) - fb_clip<F>()));
        return -(double(y) * log(c) + (1.0 - double(y)) * log(1.0 - c));
    }
    if (loss == FB_POISSON) {
        const double c = double(fb_max(a, fb_clip<F>())), yv = double(y);
        return (yv > 0.0 ? yv * log(yv / c) : 0.0) - yv + c;
    }
    return -double(y) * log(double(fb_max(a, fb_clip<F>())));  // cross_entropy
}

// The optimisers' update rule, as the reference's (NumpyBackend.update; fastbp/optim.py has the
// maths). fb_rule_for reads the hyperparameter vector hp (FB_HP_* indices) once per batch: scale
// is the factor of the batch's summed gradients (1/m for mean gradients), k the batch's index
// after the optimiser's step count (Adam's t = step + k + 1). fb_update steps one element p from
// its summed gradient g, with its state slots at s[0], s[n], ... (n: the parameter's size) and
// weight decay where `decayed` (weights, not biases): g' = scale*g + (wd + l2*scale)*p; SGD p -= lr*g';
// momentum v = mu*v - lr*g', p += v (Nesterov: p += mu*v - lr*g'); Adam m = b1*m + (1-b1)*g',
// v = b2*v + (1-b2)*g'^2, p -= lr*sqrt(1-b2^t)/(1-b1^t) * m/(sqrt(v) + eps).
__device__ __forceinline__ float fb_sqrt(float x) { return sqrtf(x); }
__device__ __forceinline__ double fb_sqrt(double x) { return sqrt(x); }
template <typename F> struct fb_rule { int opt; bool momentum, nesterov; F lr, scale, wd, mu, b1, b2, eps, lr_t; };
template <typename F>
__device__ __forceinline__ fb_rule<F> fb_rule_for(int opt, const double *hp, double scale, long long k) {
    fb_rule<F> r;
    r.opt = opt;
    r.momentum = hp[FB_HP_MOMENTUM] > 0.0;
    r.nesterov = r.momentum && hp[FB_HP_NESTEROV] > 0.0;
    r.lr = F(hp[FB_HP_LR]);
    r.scale = F(scale);
    r.wd = F(hp[FB_HP_WEIGHT_DECAY] + hp[FB_HP_L2] * scale);
    r.mu = F(hp[FB_HP_MOMENTUM]);
    r.b1 = F(hp[FB_HP_BETA1]);
    r.b2 = F(hp[FB_HP_BETA2]);
    r.eps = F(hp[FB_HP_EPS]);
    const double t = hp[FB_HP_STEP] + double(k) + 1.0;
    r.lr_t = opt == FB_OPT_ADAM ? F(hp[FB_HP_LR] * sqrt(1.0 - pow(hp[FB_HP_BETA2], t)) / (1.0 - pow(hp[FB_HP_BETA1], t)))
                                : F(0);
    return r;
}
// Whether x is a number (not NaN, not an infinity), in any float type and compiler.
template <typename F> __device__ __forceinline__ bool fb_finite(F x) { return x - x == F(0); }
// The state slots fb_update reads and writes per element: Adam two (m, v), momentum one, plain SGD none.
__device__ __forceinline__ int fb_state_slots(int opt, const double *hp) {
    return opt == FB_OPT_ADAM ? 2 : hp[FB_HP_MOMENTUM] > 0.0 ? 1 : 0;
}
template <typename F>
__device__ __forceinline__ void fb_update(const fb_rule<F> &r, F &p, F g, F *s, long long n, bool decayed) {
    const F gt = r.scale * g + (decayed ? r.wd : F(0)) * p;
    if (r.opt == FB_OPT_ADAM) {
        const F m = r.b1 * s[0] + (F(1) - r.b1) * gt;
        const F v = r.b2 * s[n] + (F(1) - r.b2) * (gt * gt);
        s[0] = m;
        s[n] = v;
        p -= r.lr_t * m / (fb_sqrt(v) + r.eps);
    } else if (r.momentum) {
        const F v = r.mu * s[0] - r.lr * gt;
        s[0] = v;
        p += r.nesterov ? r.mu * v - r.lr * gt : v;
    } else {
        p -= r.lr * gt;
    }
}
// ---- END MATH ----

typedef ${T} T;    // the network's float type
typedef ${XT} XT;  // the stored inputs' type (unsigned char: scaled here by `scale`)
typedef ${LT} LT;  // the unit the gather loads: 4 uint8 inputs as one 32-bit word, else one XT

#define N0 ${N0}   // inputs
#define H ${H}     // hidden units (of the whole network)
#define CL ${CL}   // blocks per network: a thread-block cluster (sm_90) splitting the hidden units
#define HL ${HL}   // hidden units per block (ceil(H / CL); the last block may own fewer)
#define K ${K}     // outputs (at most 32: one lane each)
#define BS ${BS}   // batch size (the last batch of an epoch may be smaller)
#define NT ${NT}   // threads in the block (a multiple of 32)
#define HID_ACT ${HID_ACT}
#define OUT_ACT ${OUT_ACT}
#define LOSS ${LOSS}
#define CANCEL ${CANCEL}  // sigmoid + binary_cross_entropy or softmax + cross_entropy: delta = a - y
// the work split, chosen by cupy_backend.fused_layout():
#define SB ${SB}   // hidden forward: samples per register block
#define UPW ${UPW} // hidden forward: hidden units per block (UPW * SB <= 64 sums per lane)
#define P ${P}     // hidden forward: warps splitting one block's inputs (partial sums added later)
#define BSR ${BSR} // rows of the input buffer (BS rounded up to multiples of SB and of 4)
#define BSD ${BSD} // samples per unit in the hidden-delta buffer (BS rounded up to a multiple of 4)
#define VX ${VX}   // hidden forward: consecutive inputs per lane and load (2 or 1; divides N0)
#define TI ${TI}   // first-layer update: consecutive inputs per thread (4 or 1; divides N0)
#define TJ ${TJ}   // first-layer update: hidden units per thread
#define NG ${NG}   // first-layer update: input groups (N0 / TI)
#define JG ${JG}   // first-layer update: unit groups (ceil(HL / TJ))
#define LPR ${LPR} // inputs per gather load unit (4 or 1)
#define NU ${NU}   // load units per input row (N0 / LPR)
#define CF ${CF}   // hidden forward: sums per lane after the halving exchanges (1 or 2)
#define PREF ${PREF} // 1: the next batch is copied to shared memory asynchronously (cp.async) while
                   // this one is computed; 0 (rows not 4-byte multiples, or too big): plain gather
#define NW (NT / 32)
#define RW (UPW * SB)  // partial sums per lane in the hidden forward pass
#define NGRP ((HL + UPW - 1) / UPW)
#define FULL 0xffffffffu

// One network over CL blocks on CL SMs (a thread-block cluster): block r of a network owns hidden
// units J0 = r*HL ... J0+hn-1 (their rows of W0 and W1, their biases), computes their
// activations and its part of each output's pre-activation; the parts are exchanged through
// distributed shared memory (each block reads the others' in rank order, so every block holds the
// same sums), then every block computes the outputs and their deltas (a few values) itself, the
// hidden deltas of its units, and updates its own rows. b1 is updated by every block identically
// (its optimiser state kept per block in shared memory; block 0 writes it back). CL = 1: one block.
#if CL > 1
#if defined(__CUDACC__) && __has_include(<cooperative_groups.h>)
#include <cooperative_groups.h>
__device__ __forceinline__ void fb_cluster_sync() { cooperative_groups::this_cluster().sync(); }
__device__ __forceinline__ int fb_cluster_rank() { return (int)cooperative_groups::this_cluster().block_rank(); }
template <typename F> __device__ __forceinline__ F *fb_remote(F *p, int r) {
    return cooperative_groups::this_cluster().map_shared_rank(p, r);
}
#elif defined(__CUDACC__)  // a compiler without the CUDA headers on its path: the same in PTX (sm_90)
__device__ __forceinline__ void fb_cluster_sync() {
    asm volatile("barrier.cluster.arrive.release;\n\tbarrier.cluster.wait.acquire;" ::: "memory");
}
__device__ __forceinline__ int fb_cluster_rank() {
    unsigned r;
    asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(r));
    return (int)r;
}
template <typename F> __device__ __forceinline__ F *fb_remote(F *p, int r) {  // p's place in block r
    unsigned long long q;
    asm volatile("mapa.u64 %0, %1, %2;" : "=l"(q) : "l"(p), "r"(r));
    return reinterpret_cast<F *>(q);
}
#endif  // (elsewhere: the CPU emulator defines them)
#define CLUSTER_DIMS __cluster_dims__(CL, 1, 1)
#else
#define CLUSTER_DIMS
#endif

// What the batches read of a block's member, in shared memory (see fused_epoch)
template <typename F> struct fb_member {
    F *p[8];  // W0, b0, W1, b1, SW0, Sb0, SW1, Sb1 (the row of the kernel's params table)
};
#define MEMBER_BYTES 64
// and the member's sample order, hyperparameters and frozen bits, recomputed where they are used
// from the kernel's arguments (which cost no registers) rather than held in registers all epoch
#define MEMBER_ORDER (orders + (long long)(blockIdx.x / CL) * n)
#define MEMBER_HP (hps + (blockIdx.x / CL) * FB_N_HP)
#define MEMBER_FROZEN (frozens[blockIdx.x / CL])

// frozen: bit 0 W0, bit 1 b0, bit 2 W1, bit 3 b1 (not updated)
#define FROZEN_W0 1
#define FROZEN_B0 2
#define FROZEN_W1 4
#define FROZEN_B1 8

// Optional phase timing (compile with -DFB_PROFILE; thread 0's clock64 cycles summed per phase).
#ifdef FB_PROFILE
__device__ long long fb_prof[4];
#define PROF(k) if (tid == 0) { const long long t_ = clock64(); fb_acc[k] += t_ - fb_t; fb_t = t_; }
#else
#define PROF(k)
#endif

template <typename F> __device__ __forceinline__ F warp_sum(F v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL, v, o);
    return v;
}
template <typename F> __device__ __forceinline__ F warp_max(F v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fb_max(v, __shfl_xor_sync(FULL, v, o));
    return v;
}

// Vector loads and stores of 1, 2 or 4 consecutive values (p aligned to the vector's size).
__device__ __forceinline__ void loadv(const float *p, float (&v)[1]) { v[0] = *p; }
__device__ __forceinline__ void loadv(const double *p, double (&v)[1]) { v[0] = *p; }
__device__ __forceinline__ void loadv(const float *p, float (&v)[2]) {
    const float2 q = *reinterpret_cast<const float2 *>(p);
    v[0] = q.x; v[1] = q.y;
}
__device__ __forceinline__ void loadv(const double *p, double (&v)[2]) {
    const double2 q = *reinterpret_cast<const double2 *>(p);
    v[0] = q.x; v[1] = q.y;
}
__device__ __forceinline__ void loadv(const float *p, float (&v)[4]) {
    const float4 q = *reinterpret_cast<const float4 *>(p);
    v[0] = q.x; v[1] = q.y; v[2] = q.z; v[3] = q.w;
}
__device__ __forceinline__ void loadv(const double *p, double (&v)[4]) {
    const double2 q = reinterpret_cast<const double2 *>(p)[0], r = reinterpret_cast<const double2 *>(p)[1];
    v[0] = q.x; v[1] = q.y; v[2] = r.x; v[3] = r.y;
}
__device__ __forceinline__ void storev(float *p, const float (&v)[1]) { *p = v[0]; }
__device__ __forceinline__ void storev(double *p, const double (&v)[1]) { *p = v[0]; }
__device__ __forceinline__ void storev(float *p, const float (&v)[4]) {
    *reinterpret_cast<float4 *>(p) = make_float4(v[0], v[1], v[2], v[3]);
}
__device__ __forceinline__ void storev(double *p, const double (&v)[4]) {
    reinterpret_cast<double2 *>(p)[0] = make_double2(v[0], v[1]);
    reinterpret_cast<double2 *>(p)[1] = make_double2(v[2], v[3]);
}

// Asynchronous global -> shared copies (cp.async, sm_80 and later) of 4 or 8 bytes; a plain copy
// when this source is compiled for the CPU (the tests' emulator).
template <int BYTES> __device__ __forceinline__ void copy_async(void *dst, const void *src) {
#ifdef __CUDA_ARCH__
    unsigned long long d;
    asm("cvta.to.shared.u64 %0, %1;" : "=l"(d) : "l"(dst));
    asm volatile("cp.async.ca.shared.global [%0], [%1], %2;" :: "r"((unsigned)d), "l"(src), "n"(BYTES));
#else
    memcpy(dst, src, BYTES);
#endif
}
__device__ __forceinline__ void copy_commit() {
#ifdef __CUDA_ARCH__
    asm volatile("cp.async.commit_group;");
#endif
}
__device__ __forceinline__ void copy_wait() {
#ifdef __CUDA_ARCH__
    asm volatile("cp.async.wait_group 0;" ::: "memory");
#endif
}

// The next batch's rows (sample indices in ords) copied as they are stored into the staging
// buffers xst/yst; they land while the current batch is computed.
__device__ __forceinline__ void fetch(const XT *__restrict__ X, const T *__restrict__ Y, const long long *ords,
                                      int m, LT *xst, T *yst, int tid) {
    const LT *Xu = reinterpret_cast<const LT *>(X);
    for (int e = tid; e < m * NU; e += NT) {
        const int s = e / NU;
        copy_async<sizeof(LT)>(xst + e, Xu + ords[s] * NU + (e - s * NU));
    }
    for (int e = tid; e < m * K; e += NT) {
        const int s = e / K;
        copy_async<sizeof(T)>(yst + e, Y + ords[s] * K + (e - s * K));
    }
}

// The staged batch scaled into xs (T) and its targets into ys.
__device__ __forceinline__ void unpack(const LT *xst, const T *yst, T *xs, T *ys, T sc, int m, int tid) {
    for (int e = tid; e < m * NU; e += NT) {
        const int s = e / NU, u = e - s * NU;
        if (LPR == 4) {  // four uint8 inputs in one little-endian word
            const unsigned int w = (unsigned int)xst[e];
            const T v[4] = {T(w & 255u) * sc, T((w >> 8) & 255u) * sc, T((w >> 16) & 255u) * sc, T(w >> 24) * sc};
            storev(xs + s * N0 + 4 * u, v);
        } else {
            xs[s * N0 + u] = T(xst[e]) * sc;
        }
    }
    for (int e = tid; e < m * K; e += NT) ys[e] = yst[e];
}

// The gather without staging (PREF 0): straight from global memory into xs/ys.
__device__ __forceinline__ void gather(const XT *__restrict__ X, const T *__restrict__ Y,
                                       const long long *__restrict__ order, int start, int m, T *xs,
                                       T *ys, T sc, int tid) {
    for (int e = tid; e < m * N0; e += NT) {
        const int s = e / N0;
        xs[e] = T(X[order[start + s] * N0 + (e - s * N0)]) * sc;
    }
    for (int e = tid; e < m * K; e += NT) {
        const int s = e / K;
        ys[e] = Y[order[start + s] * K + (e - s * K)];
    }
}

// Dynamic shared memory (fused_epoch_shared_bytes() in cupy_backend.py computes the same total),
// in units of T after the indices: d0 (HL x BSD, the hidden deltas, unit-major so the update reads
// four samples of a unit in one broadcast; 16-byte aligned), xs (BSR x N0, the batch's scaled inputs), w0
// (HL x N0, W0 transposed: row j holds the weights into hidden unit J0 + j), w1 (HL x K, those rows
// of W1), c0 (HL), c1 (K), ys (BS x K), zp (P x BS x HL, partial pre-activations), z0 and a0 (BS x HL),
// d1 (BS x K), zo (2 x BS x K: this block's part of the output pre-activations, by batch parity),
// sb1 (2 x K: b1's optimiser state),
// with PREF the staging buffers yst (BS x K) and xst (BS x NU load units); before all of them
// ords (2 x BS sample indices: batch b's in ords[b % 2], copied in two batches ahead), and before
// those, 64 bytes: the member's eight pointers (fb_member).
//
// Per batch, four phases separated by __syncthreads():
//  1. unpack the staged batch into xs/ys;
//  2. start the copies of the next batch's rows and of the sample indices of the batch after it;
//     hidden forward: a warp per (UPW units, SB samples, 1/P of the inputs) block, lanes splitting
//     the inputs, the UPW*SB partial sums reduced across the warp by halving exchanges (one or
//     two sums per lane at the end);
//  3. a warp per sample: the P partial sums + bias and the hidden activations (a lane per unit),
//     output layer (a lane per output), softmax/loss by warp reductions, the output deltas, then
//     the hidden deltas (a lane per unit; w1 before its update);
//  4. updates: each thread accumulates a TJ x TI tile of the first layer's gradient over the
//     batch in registers (TI consecutive inputs per vector load, deltas four samples per load)
//     and steps those weights; then the second layer and the biases, shared out over all threads.
extern "C" __global__ void __launch_bounds__(NT) CLUSTER_DIMS
fused_epoch(const XT *__restrict__ X,          // (n_samples, N0) training inputs, shared by the members
            const T *__restrict__ Y,           // (n_samples, K) targets
            const long long *__restrict__ orders,  // (members, n): each member's sample order for the epoch
            const int n, const double scale,   // samples in the epoch; input scale (1/255 or 1)
            T *const *__restrict__ params,     // (members, 8) pointers: W0 (N0, H), b0 (H,), W1 (H, K), b1 (K,)
                                               // and the optimiser's state of each, SW0 Sb0 SW1 Sb1 (read
                                               // only when it keeps one), of each member
            const int opt, const double *hps,  // the optimiser's code; (members, FB_N_HP) hyperparameters
            const int mean, const int *__restrict__ frozens,  // (members,) frozen bits
            const double slope_h, const double slope_o,
            double *loss_parts,                // (members, NT): each thread's sum of per-sample losses
            int *unfinite)                     // (members,), zeros: set to 1 for a member whose parameters
                                               // or optimiser state hold a NaN or an infinity at the end
{
    extern __shared__ __align__(16) unsigned char fb_shared[];
    // this member's pointers, read from shared memory where used rather than held in registers
    fb_member<T> &me = *reinterpret_cast<fb_member<T> *>(fb_shared);
    long long *ords = reinterpret_cast<long long *>(fb_shared + MEMBER_BYTES);  // two batches' sample indices
    T *d0 = reinterpret_cast<T *>(ords + 2 * BS);
    T *xs = d0 + HL * BSD;
    T *w0 = xs + BSR * N0;
    T *w1 = w0 + HL * N0;
    T *c0 = w1 + HL * K;
    T *c1 = c0 + HL;
    T *ys = c1 + K;
    T *zp = ys + BS * K;
    T *z0 = zp + P * BS * HL;
    T *a0 = z0 + BS * HL;
    T *d1 = a0 + BS * HL;
    T *zo = d1 + BS * K;
    T *sb1 = zo + 2 * BS * K;
    T *yst = sb1 + 2 * K;
    LT *xst = reinterpret_cast<LT *>(yst + (PREF ? BS * K : 0));

    // blocks b*CL ... b*CL+CL-1 train member b (an ensemble: one launch, CL blocks per member)
    const int member = blockIdx.x / CL;
#if CL > 1
    const int rank = fb_cluster_rank();
#else
    const int rank = 0;
#endif
    const int J0 = rank * HL;                      // this block's first hidden unit
    const int hn = max(0, min(HL, H - J0));        // and how many it owns
    T *const *mine = params + 8 * member;

    const int tid = threadIdx.x;
    const int lane = tid & 31;
    const int warp = tid >> 5;
    const T hs = T(slope_h), os = T(slope_o), sc = T(scale);
    double my_loss = 0.0;

    // this block's parameters into shared memory, once per epoch
    for (int e = tid; e < hn * N0; e += NT) {
        const int j = e / N0, i = e - j * N0;
        w0[e] = mine[0][(long long)i * H + J0 + j];
    }
    for (int e = tid; e < hn * K; e += NT) w1[e] = mine[2][J0 * K + e];
    for (int j = tid; j < hn; j += NT) c0[j] = mine[1][J0 + j];
    for (int k = tid; k < K; k += NT) c1[k] = mine[3][k];
    if (tid < 8) me.p[tid] = mine[tid];
    __syncthreads();
    {  // b1's optimiser state: the slots the rule reads (none kept for a frozen b1: its pointer is b1's own)
        const int slots = (MEMBER_FROZEN & FROZEN_B1) ? 0 : fb_state_slots(opt, MEMBER_HP);
        for (int e = tid; e < 2 * K; e += NT) sb1[e] = e < slots * K ? mine[7][e] : T(0);
    }
    for (int e = tid; e < BSR * N0; e += NT) xs[e] = T(0);  // rows past a short batch: read, unused
    if (tid < 2 * BS) ords[tid] = tid < n ? MEMBER_ORDER[tid] : 0;  // the first two batches' samples
    __syncthreads();
    if (PREF) {  // the first batch
        fetch(X, Y, ords, min(BS, n), xst, yst, tid);
        copy_commit();
        copy_wait();
    }
    __syncthreads();

#ifdef FB_PROFILE
    long long fb_t = clock64(), fb_acc[4] = {0, 0, 0, 0};
#endif
    for (int start = 0; start < n; start += BS) {
        const int m = min(BS, n - start);

        // 1. this batch from the staging buffers into xs/ys
        if (PREF) unpack(xst, yst, xs, ys, sc, m, tid);
        else gather(X, Y, MEMBER_ORDER, start, m, xs, ys, sc, tid);
        __syncthreads();
        PROF(0)

        // 2. the next batch's copies; partial hidden pre-activations zp[p][s][j] over part p of the inputs
        if (PREF) {  // batch b+1's rows (indices in ords[(b+1)%2]); batch b+2's indices into ords[b%2]
            const int b = start / BS;
            fetch(X, Y, ords + ((b + 1) & 1) * BS, min(BS, n - start - BS), xst, yst, tid);
            if (tid < BS && start + 2 * BS + tid < n)
                copy_async<8>(ords + (b & 1) * BS + tid, MEMBER_ORDER + start + 2 * BS + tid);
            copy_commit();
        }
        const int nsb = (m + SB - 1) / SB;
        for (int item = warp; item < NGRP * nsb * P; item += NW) {
            const int p = item % P, rest = item / P;
            const int j0 = (rest / nsb) * UPW, s0 = (rest % nsb) * SB;
            T acc[RW];
#pragma unroll
            for (int r = 0; r < RW; r++) acc[r] = T(0);
            for (int t = p; t * 32 * VX < N0; t += P) {
                const int i = (t * 32 + lane) * VX;
                if (i < N0) {
                    T x[SB][VX];
#pragma unroll
                    for (int u = 0; u < SB; u++) loadv(xs + (s0 + u) * N0 + i, x[u]);
#pragma unroll
                    for (int q = 0; q < UPW; q++) {
                        T w[VX];
                        loadv(w0 + min(j0 + q, max(hn, 1) - 1) * N0 + i, w);
#pragma unroll
                        for (int u = 0; u < SB; u++)
#pragma unroll
                            for (int v = 0; v < VX; v++) acc[q * SB + u] += w[v] * x[u][v];
                    }
                }
            }
            // halving exchanges: at offset o a lane keeps one half of its list and receives its
            // partner's sums of the same half; after offsets 16..1 a lane holds one or two totals
            int base = 0, real = RW;
#pragma unroll
            for (int lvl = 0; lvl < 5; lvl++) {
                const int o = 16 >> lvl;
                int c = RW;  // list length at this level (the same on every lane)
#pragma unroll
                for (int l = 0; l < lvl; l++) c = (c + 1) / 2;
                const int half = (c + 1) / 2;
                const bool upper = (lane & o) != 0;
#pragma unroll
                for (int v = 0; v < half; v++) {
                    const T lo = acc[v], hi = v + half < c ? acc[v + half] : T(0);
                    acc[v] = (upper ? hi : lo) + __shfl_xor_sync(FULL, upper ? lo : hi, o);
                }
                if (upper) {
                    base += half;
                    real = max(real - half, 0);
                } else {
                    real = min(real, half);
                }
            }
#pragma unroll
            for (int v = 0; v < CF; v++) {
                const int q = (base + v) / SB, u = (base + v) - q * SB;
                const int j = j0 + q, s = s0 + u;
                if (v < real && j < hn && s < m) zp[(p * BS + s) * HL + j] = acc[v];
            }
        }
        __syncthreads();
        PROF(1)

        // 3. a warp per sample: the activations of this block's hidden units and its part of each
        //    output's pre-activation (zo, by batch parity: a block may start the next batch's
        //    parts while another still reads this one's); the parts exchanged (CL > 1); then the
        //    outputs, the loss, the output deltas and the deltas of this block's hidden units
        T *const parts = zo + ((start / BS) & 1) * BS * K;
        for (int s = warp; s < m; s += NW) {
            for (int j = lane; j < hn; j += 32) {
                T z = c0[j];
#pragma unroll
                for (int p = 0; p < P; p++) z += zp[(p * BS + s) * HL + j];
                z0[s * HL + j] = z;
                a0[s * HL + j] = fb_activate(z, HID_ACT, hs);
            }
            __syncwarp();
            if (lane < K) {
                T z = T(0);
                for (int j = 0; j < hn; j++) z += a0[s * HL + j] * w1[j * K + lane];
                parts[s * K + lane] = z;
            }
        }
#if CL > 1
        fb_cluster_sync();  // every block's parts written, and visible to the cluster
#else
        __syncwarp();       // one block: the warp that wrote a sample's parts reads them
#endif
        for (int s = warp; s < BSD; s += NW) {
            if (s >= m) {  // samples past a short batch: zero deltas (the update reads four at a time)
                for (int j = lane; j < hn; j += 32) d0[j * BSD + s] = T(0);
                continue;
            }
            const bool on = lane < K;
            const int k = on ? lane : 0;
            T z = c1[k];
#if CL > 1
            for (int r = 0; r < CL; r++) z += fb_remote(parts, r)[s * K + k];  // rank order: the same sum everywhere
#else
            z += parts[s * K + k];
#endif
            T a;
            if (OUT_ACT == FB_SOFTMAX) {
                const T first = __shfl_sync(FULL, z, 0);  // every lane shuffles (idle lanes use it)
                const T mx = warp_max(on ? z : first);
                const T e = on ? fb_exp(z - mx) : T(0);
                a = e / warp_sum(e);
            } else {
                a = fb_activate(z, OUT_ACT, os);
            }
            const T y = on ? ys[s * K + k] : T(0);
            const double value = warp_sum(on ? fb_loss_term(a, y, LOSS) : 0.0);
            if (lane == 0 && rank == 0) my_loss += LOSS == FB_MSE ? value / K : value;
            T d;
            if (CANCEL) {
                d = a - y;
            } else if (OUT_ACT == FB_SOFTMAX) {
                const T g = fb_loss_grad(a, y, LOSS, K);
                d = a * (g - warp_sum(on ? g * a : T(0)));
            } else {
                d = fb_loss_grad(a, y, LOSS, K) * fb_dact(z, a, OUT_ACT, os);
            }
            if (on) d1[s * K + k] = d;
            T dk[K];
#pragma unroll
            for (int kk = 0; kk < K; kk++) dk[kk] = __shfl_sync(FULL, d, kk);
            for (int j = lane; j < hn; j += 32) {
                T g = T(0);
#pragma unroll
                for (int kk = 0; kk < K; kk++) g += dk[kk] * w1[j * K + kk];
                d0[j * BSD + s] = g * fb_dact(z0[s * HL + j], a0[s * HL + j], HID_ACT, hs);
            }
        }
        __syncthreads();
        PROF(2)

        // 4. updates from the summed gradients: dW0 = xs^T d0, db0 = sum d0, dW1 = a0^T d1, db1 = sum d1
        const fb_rule<T> rule = fb_rule_for<T>(opt, MEMBER_HP, mean ? 1.0 / m : 1.0, start / BS);
        for (int tile = tid; !(MEMBER_FROZEN & FROZEN_W0) && tile < JG * NG; tile += NT) {
            const int jg = tile / NG, i0 = (tile - jg * NG) * TI;
            T g[TJ][TI];
#pragma unroll
            for (int q = 0; q < TJ; q++)
#pragma unroll
                for (int c = 0; c < TI; c++) g[q][c] = T(0);
            for (int s0 = 0; s0 < m; s0 += 4) {
                T x[4][TI];
#pragma unroll
                for (int u = 0; u < 4; u++) loadv(xs + (s0 + u) * N0 + i0, x[u]);
#pragma unroll
                for (int q = 0; q < TJ; q++) {
                    T dq[4];
                    loadv(d0 + min(jg * TJ + q, max(hn, 1) - 1) * BSD + s0, dq);
#pragma unroll
                    for (int c = 0; c < TI; c++)
#pragma unroll
                        for (int u = 0; u < 4; u++) g[q][c] += dq[u] * x[u][c];
                }
            }
#pragma unroll
            for (int q = 0; q < TJ; q++) {
                const int j = jg * TJ + q;
                if (j < hn) {
                    T w[TI];
                    loadv(w0 + j * N0 + i0, w);
#pragma unroll
                    for (int c = 0; c < TI; c++)
                        fb_update(rule, w[c], g[q][c], me.p[4] + (long long)(i0 + c) * H + J0 + j, (long long)N0 * H,
                                  true);
                    storev(w0 + j * N0 + i0, w);
                }
            }
        }
        // this block's rows of the second layer, its biases and b1, after the tiles (a spare warp
        // doing them during the tiles made the next phase ~2 us slower on an H100)
        for (int e = tid; e < hn * K + hn + K; e += NT) {
            if (e < hn * K) {
                if (MEMBER_FROZEN & FROZEN_W1) continue;
                const int j = e / K, k = e - j * K;
                T g = T(0);
                for (int s = 0; s < m; s++) g += a0[s * HL + j] * d1[s * K + k];
                fb_update(rule, w1[e], g, me.p[6] + J0 * K + e, (long long)H * K, true);
            } else if (e < hn * K + hn) {
                if (MEMBER_FROZEN & FROZEN_B0) continue;
                const int j = e - hn * K;
                T g = T(0);
                for (int s = 0; s < m; s++) g += d0[j * BSD + s];
                fb_update(rule, c0[j], g, me.p[5] + J0 + j, (long long)H, false);
            } else {  // every block of the network the same step (its own copy of the state)
                if (MEMBER_FROZEN & FROZEN_B1) continue;
                const int k = e - hn * K - hn;
                T g = T(0);
                for (int s = 0; s < m; s++) g += d1[s * K + k];
                fb_update(rule, c1[k], g, sb1 + k, (long long)K, false);
            }
        }
        if (PREF) copy_wait();  // this thread's copies of the next batch (issued in phase 2) have landed
        __syncthreads();
        PROF(3)
    }

    // this block's parameters back to the layers' arrays (b1, its state and the loss: block 0's),
    // and whether every value of them and of the optimiser state of its units is finite (any
    // that is not marks the member in `unfinite`: the host checks nothing else)
    bool finite = true;
    for (int e = tid; e < hn * N0; e += NT) {
        const int j = e / N0, i = e - j * N0;
        me.p[0][(long long)i * H + J0 + j] = w0[e];
        finite &= fb_finite(w0[e]);
    }
    for (int e = tid; e < hn * K; e += NT) {
        me.p[2][J0 * K + e] = w1[e];
        finite &= fb_finite(w1[e]);
    }
    for (int j = tid; j < hn; j += NT) {
        me.p[1][J0 + j] = c0[j];
        finite &= fb_finite(c0[j]);
    }
    // the state arrays (frozen parameters keep none: their pointer is the parameter's own, not read)
    const int slots = fb_state_slots(opt, MEMBER_HP), frozen = MEMBER_FROZEN;
    const int sw0 = frozen & FROZEN_W0 ? 0 : slots, sw1 = frozen & FROZEN_W1 ? 0 : slots;
    const int sb0 = frozen & FROZEN_B0 ? 0 : slots, sb1n = frozen & FROZEN_B1 ? 0 : slots;
    for (int e = tid; e < sw0 * N0 * hn; e += NT) {  // SW0 (slots, N0, H): this block's columns
        const int q = e / (N0 * hn), r = e - q * N0 * hn, i = r / hn;
        finite &= fb_finite(me.p[4][(long long)q * N0 * H + (long long)i * H + J0 + (r - i * hn)]);
    }
    for (int e = tid; e < sw1 * hn * K; e += NT) {  // SW1 (slots, H, K): this block's rows
        const int q = e / (hn * K);
        finite &= fb_finite(me.p[6][(long long)q * H * K + J0 * K + (e - q * hn * K)]);
    }
    for (int e = tid; e < sb0 * hn; e += NT) {      // Sb0 (slots, H)
        const int q = e / hn;
        finite &= fb_finite(me.p[5][q * H + J0 + (e - q * hn)]);
    }
    if (rank == 0) {
        for (int k = tid; k < K; k += NT) {
            me.p[3][k] = c1[k];
            finite &= fb_finite(c1[k]);
        }
        for (int e = tid; e < sb1n * K; e += NT) {
            me.p[7][e] = sb1[e];
            finite &= fb_finite(sb1[e]);
        }
        loss_parts[(long long)member * NT + tid] = my_loss;
    }
    if (!finite) unfinite[member] = 1;
#if CL > 1
    fb_cluster_sync();  // no block leaves while another may still read its shared memory
#endif
#ifdef FB_PROFILE
    if (tid == 0)
        for (int k = 0; k < 4; k++) fb_prof[k] += fb_acc[k];
#endif
}

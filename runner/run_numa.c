/* NUMA topology, the plan of expert slices per node, mbind of their byte
 * ranges, thread pinning and the prefault of the CPU section
 * (runner/mp_numa.h). */
#include <errno.h>
#include <numa.h>
#include <numaif.h>
#include <omp.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "mp_numa.h"

#define PAGE 4096u

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- topology ------------------------------------------------------------------- */

void mp_numa_topo_free(mp_numa_topo *t)
{
    free(t->cpu);
    free(t->cpu_node);
    free(t->node_id);
    memset(t, 0, sizeof *t);
}

static int topo_alloc(mp_numa_topo *t, uint32_t ncpus, uint32_t max_nodes, mp_error *err)
{
    t->cpu = calloc(ncpus ? ncpus : 1, sizeof *t->cpu);
    t->cpu_node = calloc(ncpus ? ncpus : 1, sizeof *t->cpu_node);
    t->node_id = calloc(max_nodes ? max_nodes : 1, sizeof *t->node_id);
    if (!t->cpu || !t->cpu_node || !t->node_id) {
        mp_numa_topo_free(t);
        return mp_fail(err, MP_ERR_INPUT, NULL, NULL, "out of memory");
    }
    t->ncpus = ncpus;
    return MP_OK;
}

int mp_numa_topo_simulate(uint32_t nodes, uint32_t cpus_per_node, mp_numa_topo *t, mp_error *err)
{
    memset(t, 0, sizeof *t);
    if (nodes == 0 || nodes > 1024 || cpus_per_node == 0 || cpus_per_node > 4096)
        return mp_fail(err, MP_ERR_USAGE, NULL, NULL, "simulated topology of %u nodes x %u CPUs", nodes, cpus_per_node);
    int rc = topo_alloc(t, nodes * cpus_per_node, nodes, err);
    if (rc)
        return rc;
    t->nodes = nodes;
    t->simulated = true;
    for (uint32_t j = 0; j < nodes; j++)
        t->node_id[j] = j;
    for (uint32_t i = 0; i < t->ncpus; i++) {
        t->cpu[i] = i;
        t->cpu_node[i] = i / cpus_per_node;
    }
    return MP_OK;
}

int mp_numa_topo_detect(mp_numa_topo *t, mp_error *err)
{
    memset(t, 0, sizeof *t);
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) != 0)
        return mp_fail_errno(err, NULL, errno, "sched_getaffinity");
    uint32_t ncpus = (uint32_t)CPU_COUNT(&set);
    bool numa = numa_available() >= 0;
    int max_node = numa ? numa_max_node() : 0;
    if (max_node < 0)
        max_node = 0;
    int rc = topo_alloc(t, ncpus, (uint32_t)max_node + 1, err);
    if (rc)
        return rc;
    t->nodes = 1;
    /* node-major order: node 0's CPUs, then node 1's, ... (empty nodes skipped
     * by renumbering, so plan node j is the j-th node that has our CPUs) */
    uint32_t at = 0, plan_node = 0;
    for (int node = 0; node <= max_node; node++) {
        uint32_t found = 0;
        for (int c = 0; c < CPU_SETSIZE && at < ncpus; c++) {
            if (!CPU_ISSET(c, &set))
                continue;
            int cn = numa ? numa_node_of_cpu(c) : 0;
            if (cn < 0)
                cn = 0;
            if (cn != node)
                continue;
            t->cpu[at] = (uint32_t)c;
            t->cpu_node[at] = plan_node;
            at++;
            found++;
        }
        if (found)
            t->node_id[plan_node++] = (uint32_t)node;
    }
    t->ncpus = at;
    t->nodes = plan_node ? plan_node : 1;
    if (at == 0) { /* no CPU matched a node: one node of all CPUs */
        for (int c = 0; c < CPU_SETSIZE && at < ncpus; c++)
            if (CPU_ISSET(c, &set)) {
                t->cpu[at] = (uint32_t)c;
                t->cpu_node[at++] = 0;
            }
        t->ncpus = at;
        t->nodes = 1;
        t->node_id[0] = 0;
    }
    return MP_OK;
}

/* ---- the plan ---------------------------------------------------------------------- */

void mp_numa_plan_free(mp_numa_plan *p)
{
    if (!p)
        return;
    free(p->thread_node);
    free(p->thread_cpu);
    free(p->node_threads);
    free(p->slice0);
    free(p->slice1);
    free(p->exec_node);
    free(p->node_id);
    memset(p, 0, sizeof *p);
}

int mp_numa_plan_make(const mp_numa_topo *t, uint32_t threads, uint32_t hidden, uint32_t inter, uint32_t slice_width,
                      mp_numa_plan *p, mp_error *err)
{
    memset(p, 0, sizeof *p);
    if (threads == 0 || t->nodes == 0 || t->ncpus == 0)
        return mp_fail(err, MP_ERR_USAGE, NULL, NULL, "NUMA plan for %u threads on %u nodes", threads, t->nodes);
    const uint32_t N = t->nodes;
    p->nodes = N;
    p->threads = threads;
    p->simulated = t->simulated;
    p->thread_node = calloc(threads, sizeof *p->thread_node);
    p->thread_cpu = calloc(threads, sizeof *p->thread_cpu);
    p->node_threads = calloc(N, sizeof *p->node_threads);
    p->slice0 = calloc(N, sizeof *p->slice0);
    p->slice1 = calloc(N, sizeof *p->slice1);
    p->exec_node = calloc(N, sizeof *p->exec_node);
    p->node_id = calloc(N, sizeof *p->node_id);
    if (!p->thread_node || !p->thread_cpu || !p->node_threads || !p->slice0 || !p->slice1 || !p->exec_node ||
        !p->node_id) {
        mp_numa_plan_free(p);
        return mp_fail(err, MP_ERR_INPUT, NULL, NULL, "out of memory");
    }
    memcpy(p->node_id, t->node_id, N * sizeof *p->node_id);
    /* threads fill the CPUs in node-major order: with as many threads as
     * CPUs every node gets its own CPUs' worth */
    for (uint32_t i = 0; i < threads; i++) {
        uint32_t c = i % t->ncpus;
        p->thread_cpu[i] = (int32_t)t->cpu[c];
        p->thread_node[i] = t->cpu_node[c];
        p->node_threads[t->cpu_node[c]]++;
    }
    /* slices as mp_expert_share_for_node splits them (so the byte ranges agree) */
    for (uint32_t j = 0; j < N; j++) {
        mp_expert_share sh;
        int rc = mp_expert_share_for_node(hidden, inter, slice_width, N, j, &sh, err);
        if (rc) {
            mp_numa_plan_free(p);
            return rc;
        }
        p->slice0[j] = sh.slice0;
        p->slice1[j] = sh.slice1;
        p->slices = sh.slice1 > p->slices ? sh.slice1 : p->slices;
    }
    /* a node without threads (fewer threads than nodes) hands its slices to
     * the nodes that have some, round robin */
    uint32_t with = 0;
    for (uint32_t j = 0; j < N; j++)
        with += p->node_threads[j] > 0;
    for (uint32_t j = 0, r = 0; j < N; j++) {
        if (p->node_threads[j]) {
            p->exec_node[j] = j;
            continue;
        }
        uint32_t pick = r++ % with, k = 0;
        for (; k < N; k++)
            if (p->node_threads[k] && pick-- == 0)
                break;
        p->exec_node[j] = k;
    }
    return MP_OK;
}

/* ---- byte ranges ------------------------------------------------------------------------ */

static void add_range(uint64_t a, uint64_t b, mp_byte_range *out, size_t max_out, size_t *n)
{
    /* shrink to whole pages: straddling pages belong to no single node */
    a = (a + PAGE - 1) / PAGE * PAGE;
    b = b / PAGE * PAGE;
    if (b <= a)
        return;
    if (*n > 0 && out[*n - 1].offset + out[*n - 1].size == a) { /* adjacent: merge */
        out[*n - 1].size += b - a;
        return;
    }
    if (*n < max_out)
        out[*n] = (mp_byte_range){a, b - a};
    (*n)++;
}

size_t mp_numa_matrix_ranges(const mp_linear *w, bool row_split, uint32_t lo, uint32_t hi, uint32_t slice_width,
                             mp_byte_range *out, size_t max_out)
{
    uint32_t groups, np, kg, kp_last, n;
    uint64_t es, data_bytes;
    if (w->kind == MP_LIN_Q8) {
        const mp_amx_int8_layout *l = &w->q8.lay;
        groups = l->groups, np = l->np, kg = l->kg, kp_last = l->kp_last, n = l->n, es = 1, data_bytes = l->data_bytes;
    } else if (w->kind == MP_LIN_BF16_AMX) {
        const mp_amx_bf16_layout *l = &w->amx_bf16.lay;
        groups = l->groups, np = l->np, kg = l->kg, kp_last = l->kp_last, n = l->n, es = 2, data_bytes = l->data_bytes;
    } else {
        return 0;
    }
    if (lo >= hi)
        return 0;
    size_t cnt = 0;
    if (row_split) {
        /* rows [lo*S, hi*S) of every K-group; the last slice's owner also has the padding rows */
        uint64_t r0 = (uint64_t)lo * slice_width, r1 = (uint64_t)hi * slice_width;
        if (r1 >= n)
            r1 = np;
        if (r0 >= r1)
            return 0;
        for (uint32_t g = 0; g < groups; g++) {
            uint64_t kp = g + 1 < groups ? kg : kp_last;
            uint64_t base = (uint64_t)g * np * kg * es;
            add_range(base + r0 * kp * es, base + r1 * kp * es, out, max_out, &cnt);
        }
    } else {
        /* K-groups [lo, hi) (slice_width == kg for a down matrix) */
        if (hi > groups)
            hi = groups;
        if (lo >= hi)
            return 0;
        uint64_t a = (uint64_t)lo * np * kg * es;
        uint64_t b = hi == groups ? data_bytes : (uint64_t)hi * np * kg * es;
        add_range(a, b, out, max_out, &cnt);
    }
    return cnt < max_out ? cnt : max_out;
}

/* Calls fn(node, addr, len, user) for every page-aligned range of node j's
 * slices of every routed expert (data bytes only). */
typedef void (*range_fn)(uint32_t node, const uint8_t *addr, uint64_t len, void *user);

static void for_each_range(const mp_model *m, const mp_numa_plan *p, uint32_t only_node, range_fn fn, void *user)
{
    const mp_model_desc *d = m->d;
    mp_byte_range r[64];
    for (uint32_t L = 0; L < d->num_hidden_layers; L++) {
        const mp_layer *ly = &m->layers[L];
        if (!ly->moe)
            continue;
        for (uint32_t e = 0; e < d->n_routed_experts; e++) {
            const mp_linear *mats[3] = {&ly->exp_gate[e], &ly->exp_up[e], &ly->exp_down[e]};
            for (uint32_t j = 0; j < p->nodes; j++) {
                if (only_node != UINT32_MAX && j != only_node)
                    continue;
                for (int k = 0; k < 3; k++) {
                    size_t n = mp_numa_matrix_ranges(mats[k], k < 2, p->slice0[j], p->slice1[j], m->slice_width, r,
                                                     sizeof r / sizeof r[0]);
                    const uint8_t *base = mats[k]->t ? mats[k]->t->data : NULL;
                    for (size_t i = 0; i < n && base; i++)
                        fn(j, base + r[i].offset, r[i].size, user);
                }
            }
        }
    }
}

typedef struct bind_ctx {
    mp_numa_stats *st;
    const mp_numa_plan *p;
} bind_ctx;

static void bind_one(uint32_t j, const uint8_t *addr, uint64_t len, void *user)
{
    bind_ctx *b = user;
    uint32_t node = b->p->node_id[j];
    if (node >= 1024)
        return;
    unsigned long mask[1024 / (8 * sizeof(unsigned long))];
    memset(mask, 0, sizeof mask);
    mask[node / (8 * sizeof(unsigned long))] = 1ul << (node % (8 * sizeof(unsigned long)));
    long rc = mbind((void *)addr, len, MPOL_BIND, mask, 1024, MPOL_MF_MOVE);
    b->st->ranges++;
    if (rc != 0) {
        if (!b->st->bind_failures++)
            b->st->first_errno = errno;
    } else {
        b->st->bytes += len;
    }
}

int mp_numa_bind_experts(const mp_model *m, const mp_numa_plan *p, mp_numa_stats *st, mp_error *err)
{
    (void)err;
    memset(st, 0, sizeof *st);
    if (!p || p->simulated || numa_available() < 0)
        return MP_OK;
    double t0 = now_seconds();
    bind_ctx b = {st, p};
    for_each_range(m, p, UINT32_MAX, bind_one, &b);
    st->seconds = now_seconds() - t0;
    return MP_OK;
}

void mp_numa_pin_threads(const mp_numa_plan *p)
{
    if (!p || p->simulated || p->nodes < 2)
        return;
#pragma omp parallel num_threads((int)p->threads)
    {
        int t = omp_get_thread_num();
        if (t < (int)p->threads) {
            cpu_set_t set;
            CPU_ZERO(&set);
            CPU_SET(p->thread_cpu[t], &set);
            sched_setaffinity(0, sizeof set, &set);
        }
    }
}

/* ---- prefault ------------------------------------------------------------------------- */

/* One thread's share [a, b) of a range, faulted in. */
static void fault_range(const uint8_t *addr, uint64_t len, bool *populate)
{
    if (!len)
        return;
    uintptr_t a = (uintptr_t)addr / PAGE * PAGE, b = ((uintptr_t)addr + len + PAGE - 1) / PAGE * PAGE;
#ifdef MADV_POPULATE_READ
    if (*populate && madvise((void *)a, b - a, MADV_POPULATE_READ) == 0)
        return;
    *populate = false;
#endif
    const volatile uint8_t *p = (const volatile uint8_t *)a;
    uint8_t sink = 0;
    for (uintptr_t o = 0; o < b - a; o += PAGE)
        sink ^= p[o];
    (void)sink;
}

typedef struct fault_ctx {
    uint32_t rank, count; /* this thread's index among its node's threads */
    uint64_t seen;        /* bytes of the node's ranges walked so far */
    uint64_t chunk;       /* the interleave unit */
    bool populate;
} fault_ctx;

/* The node's ranges are cut into chunks dealt round robin to its threads. */
static void fault_share(uint32_t node, const uint8_t *addr, uint64_t len, void *user)
{
    (void)node;
    fault_ctx *f = user;
    for (uint64_t o = 0; o < len;) {
        uint64_t idx = (f->seen + o) / f->chunk, end = (idx + 1) * f->chunk - f->seen;
        if (end > len)
            end = len;
        if (idx % f->count == f->rank)
            fault_range(addr + o, end - o, &f->populate);
        o = end;
    }
    f->seen += len;
}

void mp_prefault_cpu_section(const mp_model *m, const mp_numa_plan *p, mp_prefault_stats *st)
{
    memset(st, 0, sizeof *st);
    const mp_container *c = m->c;
    const uint8_t *base = c->file.data + c->hdr.section_offset[MP_SECTION_CPU];
    const uint64_t size = c->hdr.section_size[MP_SECTION_CPU];
    if (!size)
        return;
    double t0 = now_seconds();
    /* the section starts on a 2 MiB boundary of the file (FORMAT.md); where
     * the kernel backs file pages with huge pages, this asks for them */
    st->hugepage_advice = madvise((void *)base, size, MADV_HUGEPAGE) == 0;
    bool populate = true;
    const int threads = m->threads > 0 ? m->threads : 1;
    const bool by_node = p && p->nodes > 1;
#pragma omp parallel num_threads(threads) reduction(&& : populate)
    {
        const uint32_t t = (uint32_t)omp_get_thread_num(), nt = (uint32_t)omp_get_num_threads();
        if (by_node && t < p->threads) {
            /* first reads of a node's slices by that node's threads, their
             * allocations bound there (a MAP_SHARED mapping follows the
             * faulting thread's policy, not mbind's) */
            uint32_t node = p->thread_node[t], rank = 0;
            for (uint32_t i = 0; i < t; i++)
                rank += p->thread_node[i] == node;
            if (!p->simulated && numa_available() >= 0) {
                struct bitmask *bm = numa_allocate_nodemask();
                if (bm) {
                    numa_bitmask_setbit(bm, p->node_id[node]);
                    numa_set_membind(bm);
                    numa_bitmask_free(bm);
                }
            }
            fault_ctx f = {rank, p->node_threads[node] ? p->node_threads[node] : 1, 0, 8u << 20, true};
            for_each_range(m, p, node, fault_share, &f);
            populate = populate && f.populate;
            if (!p->simulated && numa_available() >= 0)
                numa_set_membind(numa_all_nodes_ptr);
        }
#pragma omp barrier
        /* everything (scales, straddling pages, other nodes' leftovers): equal shares */
        uint64_t per = (size + nt - 1) / nt;
        per = (per + PAGE - 1) / PAGE * PAGE;
        uint64_t a = (uint64_t)t * per, b = a + per < size ? a + per : size;
        bool pop = true;
        if (a < b)
            fault_range(base + a, b - a, &pop);
        populate = populate && pop;
    }
    st->populate = populate;
    st->bytes = size;
    st->seconds = now_seconds() - t0;
}

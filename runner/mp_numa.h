/* mp_numa: where the routed experts live and which threads compute them.
 *
 * Every routed expert is cut along its intermediate dimension into slices
 * of 256 (docs/FORMAT.md 7.6): slice s is rows [256s, 256s+256) of gate and
 * up and K-group s of down, each a contiguous byte range. Node j of N owns
 * slices [j*S/N, (j+1)*S/N) of every expert (mp_expert_share_for_node): its
 * threads compute those slices' gate/up and their partial down products,
 * which are summed. The container is mapped once; nothing is copied per
 * node.
 *
 * Placement: the container is a MAP_SHARED file mapping, for which Linux
 * ignores an mbind policy when a page is first read (the faulting thread's
 * own policy decides, see mbind(2)). So a node's ranges get both: mbind
 * (MPOL_BIND, MPOL_MF_MOVE: moves pages already in memory) and, at prefault,
 * their first read by threads of that node with their policy bound there.
 *
 * A plan can also be made for a simulated topology (MOEPACK_NUMA_NODES=N at
 * load, or mp_numa_topo_simulate in tests): the slice split, the thread ->
 * node map and the per-node work queues run as on N nodes; mbind and
 * pinning are skipped because the nodes do not exist. */
#ifndef MP_NUMA_H
#define MP_NUMA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mp_error.h"
#include "mp_forward.h"
#include "mp_layout.h"

typedef struct mp_numa_topo {
    uint32_t nodes;     /* >= 1 */
    uint32_t ncpus;     /* CPUs this process may run on */
    uint32_t *cpu;      /* [ncpus] their ids, grouped by node (node 0's first) */
    uint32_t *cpu_node; /* [ncpus] the node of each, 0 .. nodes-1 */
    uint32_t *node_id;  /* [nodes] the system's number of node j */
    bool simulated;
} mp_numa_topo;

/* The machine's topology from libnuma (one node when NUMA is unavailable). */
int mp_numa_topo_detect(mp_numa_topo *t, mp_error *err);
/* `nodes` nodes of `cpus_per_node` CPUs each (numbered 0, 1, ... node-major). */
int mp_numa_topo_simulate(uint32_t nodes, uint32_t cpus_per_node, mp_numa_topo *t, mp_error *err);
void mp_numa_topo_free(mp_numa_topo *t);

typedef struct mp_numa_plan {
    uint32_t nodes, threads, slices;
    bool simulated;
    uint32_t *thread_node;  /* [threads] node of worker thread t */
    int32_t *thread_cpu;    /* [threads] CPU it is pinned to */
    uint32_t *node_threads; /* [nodes] worker threads on node j */
    uint32_t *slice0, *slice1; /* [nodes] node j owns slices [slice0, slice1) of every expert */
    uint32_t *exec_node;    /* [nodes] whose threads compute node j's slices: j, or (no threads there) a node that has some */
    uint32_t *node_id;      /* [nodes] the system's node number (for mbind) */
} mp_numa_plan;

/* Thread t runs on the (t mod ncpus)-th CPU of the topology's node-major list;
 * slices are split as mp_expert_share_for_node splits them. */
int mp_numa_plan_make(const mp_numa_topo *t, uint32_t threads, uint32_t hidden, uint32_t inter, uint32_t slice_width,
                      mp_numa_plan *p, mp_error *err);
void mp_numa_plan_free(mp_numa_plan *p);

/* Node j's page-aligned byte ranges of one expert matrix: rows [r0, r1) of a
 * gate/up matrix in each of its K-groups (row_split), or K-groups [s0, s1) of
 * a down matrix. Ranges are byte offsets from the matrix's data; pages that
 * straddle two nodes' bytes are left out (first touch places them). Returns
 * the number of ranges written (at most max_out). */
size_t mp_numa_matrix_ranges(const mp_linear *w, bool row_split, uint32_t lo, uint32_t hi, uint32_t slice_width,
                             mp_byte_range *out, size_t max_out);

typedef struct mp_numa_stats {
    uint64_t ranges, bytes;   /* bound with mbind (0 when simulated or on one node) */
    uint64_t bind_failures;   /* mbind refusals (the first one's errno in first_errno) */
    int first_errno;
    double seconds;
} mp_numa_stats;

/* Binds every node's expert slices to it (mbind MPOL_BIND | MPOL_MF_MOVE).
 * Skipped for simulated plans and single-node machines. */
int mp_numa_bind_experts(const mp_model *m, const mp_numa_plan *p, mp_numa_stats *st, mp_error *err);

/* Pins the model's OpenMP worker threads to the plan's CPUs (real multi-node
 * plans only; a no-op otherwise). */
void mp_numa_pin_threads(const mp_numa_plan *p);

typedef struct mp_prefault_stats {
    uint64_t bytes;
    double seconds;
    bool hugepage_advice; /* madvise(MADV_HUGEPAGE) accepted */
    bool populate;        /* MADV_POPULATE_READ did the faulting (else one read per page) */
} mp_prefault_stats;

/* Faults the CPU section in with all threads: MADV_HUGEPAGE on it first, then
 * each node's expert slices read by that node's threads, then the rest. */
void mp_prefault_cpu_section(const mp_model *m, const mp_numa_plan *p, mp_prefault_stats *st);

#endif

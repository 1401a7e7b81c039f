/* convert_internal: what the conversion pipeline's files share (convert.h is
 * the public side). One conversion = one ctx; one container tensor = one job. */
#ifndef MP_CONVERT_INTERNAL_H
#define MP_CONVERT_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "chat.h"
#include "convert.h"
#include "source.h"

typedef enum {
    JOB_F32,      /* row_major f32 */
    JOB_BF16,     /* row_major bf16 */
    JOB_INT4,     /* gpu_int4 */
    JOB_AMX_INT8, /* routed expert, int8 */
    JOB_AMX_BF16, /* routed expert, bf16 */
    JOB_W_UK,     /* heads bf16 [H][kv_lora][nope] from kv_b or k_b */
    JOB_W_UV,     /* heads bf16 [H][v][kv_lora] from kv_b or v_b */
} job_kind;

typedef struct job {
    job_kind kind;
    size_t tensor; /* index into the plan */
    uint32_t unit;
    const mp_src_tensor *src; /* kv_b for W_UK/W_UV when present, else k_b / v_b */
    /* results */
    double sum_w2, sum_e2;
    uint64_t nonfinite, zero_rows;
    int64_t first_zero_row;
    bool done;
} job;

typedef struct ctx {
    const mp_convert_opts *o;
    mp_source *src;
    const mp_model_desc *d;
    mp_container_plan plan;
    job *jobs;
    size_t n_jobs, cap_jobs;
    uint32_t n_units;
    uint32_t n_layers; /* decoder layers converted (incl. kept MTP layers) */
    mp_outfile out;
    bool out_open;
    int journal_fd;
    char *journal_path;
    uint64_t plan_hash;
    /* progress */
    uint64_t total_bytes, done_bytes, resumed_bytes;
    double t_start, t_last_print;
    /* per-thread scratch */
    int threads;
    struct scratch {
        float *f;
        size_t f_cap;
        uint8_t *b;
        size_t b_cap;
        uint8_t *q;
        size_t q_cap;
        float *s;
        size_t s_cap;
    } *scratch;
} ctx;

/* convert_plan.c: every container tensor and its job, offsets fixed. */
int mp_convert_build_plan(ctx *c, mp_error *err);

/* convert_tensor.c: reads, checks, quantizes, packs, hashes and writes one tensor. */
int mp_convert_run_job(ctx *c, job *j, struct scratch *sc, mp_error *err);
void mp_convert_scratch_free(struct scratch *sc);

/* convert_journal.c: what --resume continues from. */
uint64_t mp_convert_plan_hash(const ctx *c);
/* Empties the (locked) journal and writes its head line: a new conversion. */
int mp_convert_journal_start(ctx *c, mp_error *err);
int mp_convert_journal_load(ctx *c, uint32_t *restored, mp_error *err);
/* Re-hashes every restored tensor in OUT.partial against the checksum the
 * journal recorded: of the *checked restored units, *redone had a tensor that
 * differs and are marked to be converted again (one warning names the first).
 * *bytes_checked: the bytes read. */
int mp_convert_journal_check(ctx *c, uint32_t *checked, uint32_t *redone, uint64_t *bytes_checked, mp_error *err);
int mp_convert_journal_append_unit(ctx *c, uint32_t unit, mp_error *err);

/* convert_meta.c: the summary and the metadata JSON. */
void mp_convert_summarize(const ctx *c, mp_convert_summary *sum);
char *mp_convert_build_meta(const ctx *c, const mp_convert_summary *sum, mp_chat_format chat,
                            mp_chat_template_match chat_match, mp_error *err);

#endif

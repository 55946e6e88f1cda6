/* llamatwist's C face for the parts of libllama that only have a C++ API (src/llama-ext.h, exported by
 * libllama and libmtmd but declared with C++ linkage and std::map): what --fit measures, and the hidden states of multi-token prediction and EAGLE-3. Implemented in llama_ext.cpp;
 * cffi declares the same functions (cdef.py). */
#ifndef LLAMATWIST_LLAMA_EXT_H
#define LLAMATWIST_LLAMA_EXT_H

#include <stddef.h>
#include "llama.h"
#include "mtmd.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One buffer type's memory in a context: the model's weights, the context's caches, the compute buffers. */
struct llamatwist_buffer_use {
    ggml_backend_buffer_type_t buft;
    size_t model;
    size_t context;
    size_t compute;
};

/* Writes at most cap rows; returns how many buffer types there are. */
int llamatwist_memory_breakdown(const struct llama_context * ctx, struct llamatwist_buffer_use * out, int cap);
int llamatwist_model_n_devices(const struct llama_model * model);
ggml_backend_dev_t llamatwist_model_get_device(const struct llama_model * model, int i);
int llamatwist_model_n_expert(const struct llama_model * model);
/* A multimodal projector's memory per device (libmtmd's mtmd_get_memory_usage, loaded without allocating):
 * writes at most cap (device, bytes) pairs; returns how many devices there are, -1 when it cannot be read. */
int llamatwist_mtmd_memory_usage(const char * path, struct mtmd_context_params params, ggml_backend_dev_t * devs,
                                 size_t * sizes, int cap);

/* Multi-token prediction (--spec-type draft-mtp): the target's hidden states that feed the model's NextN head,
 * and which NextN head a context of type LLAMA_CONTEXT_TYPE_MTP runs. */
void llamatwist_set_embeddings_nextn(struct llama_context * ctx, bool value, bool masked);
float * llamatwist_get_embeddings_nextn(struct llama_context * ctx);
float * llamatwist_get_embeddings_nextn_ith(struct llama_context * ctx, int32_t i);
void llamatwist_set_nextn_layer_offset(struct llama_context * ctx, int32_t offset);

/* EAGLE-3 (--spec-type draft-eagle3): the target's hidden states at the input of chosen layers (n_layer: its
 * final state, the NextN one), and which layers an EAGLE-3 draft model takes them from. */
void llamatwist_set_embeddings_layer_inp(struct llama_context * ctx, uint32_t lid, bool value);
float * llamatwist_get_embeddings_layer_inp(struct llama_context * ctx, uint32_t lid);
/* Writes at most cap layer ids; returns how many the model has (0: not an EAGLE-3 draft). */
int llamatwist_model_target_layer_ids(const struct llama_model * model, int32_t * out, int cap);

/* The context a draft context reads from (NULL: none): the target's, when the draft borrows its KV cache (a
 * Gemma 4 assistant) or its token embeddings and output matrix (EAGLE-3, DFlash drafts without their own). */
struct llama_context * llamatwist_get_ctx_other(struct llama_context * ctx);

#ifdef __cplusplus
}
#endif

#endif

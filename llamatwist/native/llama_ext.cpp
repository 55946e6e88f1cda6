// The C ABI of llama_ext.h over libllama's C++ staging API (llama-ext.h, installed by build_native.py).
#include "llama_ext.h"

#include "llama-ext.h"

#include <map>

extern "C" int llamatwist_memory_breakdown(const struct llama_context * ctx, struct llamatwist_buffer_use * out, int cap) {
    const llama_memory_breakdown breakdown = llama_get_memory_breakdown(ctx);
    int n = 0;
    for (const auto & [buft, use] : breakdown) {
        if (n < cap) {
            out[n] = {buft, use.model, use.context, use.compute};
        }
        n++;
    }
    return n;
}

extern "C" int llamatwist_mtmd_memory_usage(const char * path, struct mtmd_context_params params,
                                           ggml_backend_dev_t * devs, size_t * sizes, int cap) {
    const std::map<ggml_backend_dev_t, size_t> usage = mtmd_get_memory_usage(path, params);
    if (usage.empty()) {
        return -1;
    }
    int n = 0;
    for (const auto & [dev, size] : usage) {
        if (n < cap) {
            devs[n] = dev;
            sizes[n] = size;
        }
        n++;
    }
    return n;
}

extern "C" int llamatwist_model_n_devices(const struct llama_model * model) {
    return llama_model_n_devices(model);
}

extern "C" ggml_backend_dev_t llamatwist_model_get_device(const struct llama_model * model, int i) {
    return llama_model_get_device(model, i);
}

extern "C" int llamatwist_model_n_expert(const struct llama_model * model) {
    return llama_model_n_expert(model);
}

extern "C" void llamatwist_set_embeddings_nextn(struct llama_context * ctx, bool value, bool masked) {
    llama_set_embeddings_nextn(ctx, value, masked);
}

extern "C" float * llamatwist_get_embeddings_nextn(struct llama_context * ctx) {
    return llama_get_embeddings_nextn(ctx);
}

extern "C" float * llamatwist_get_embeddings_nextn_ith(struct llama_context * ctx, int32_t i) {
    return llama_get_embeddings_nextn_ith(ctx, i);
}

extern "C" void llamatwist_set_nextn_layer_offset(struct llama_context * ctx, int32_t offset) {
    llama_set_nextn_layer_offset(ctx, offset);
}

extern "C" void llamatwist_set_embeddings_layer_inp(struct llama_context * ctx, uint32_t lid, bool value) {
    llama_set_embeddings_layer_inp(ctx, lid, value);
}

extern "C" float * llamatwist_get_embeddings_layer_inp(struct llama_context * ctx, uint32_t lid) {
    return llama_get_embeddings_layer_inp(ctx, lid);
}

extern "C" int llamatwist_model_target_layer_ids(const struct llama_model * model, int32_t * out, int cap) {
    const int n = (int) llama_model_target_layer_ids_n(model);
    const int32_t * ids = llama_model_target_layer_ids(model);
    for (int i = 0; i < n && i < cap && ids != nullptr; ++i) {
        out[i] = ids[i];
    }
    return ids == nullptr ? 0 : n;
}

extern "C" struct llama_context * llamatwist_get_ctx_other(struct llama_context * ctx) {
    return llama_get_ctx_other(ctx);
}

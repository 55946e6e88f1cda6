// Test helper, LD_PRELOADed: ggml_backend_dev_memory reports a fixed free and total memory (MiB) for the
// devices named in FAKE_DEVICE_MEMORY ("NAME=MiB,NAME=MiB"), so that --fit can be compared with
// llama-fit-params on devices of a chosen size (tests/test_fit_params.py); other devices answer as they would.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>
#include <stddef.h>

typedef struct ggml_backend_device * ggml_backend_dev_t;

static void * ggml_base(const char * symbol) {
    // the loaded libggml-base, whichever scope it was loaded into (Python loads extensions RTLD_LOCAL)
    void * lib = dlopen("libggml-base.so.0", RTLD_LAZY | RTLD_NOLOAD);
    void * fn = lib ? dlsym(lib, symbol) : NULL;
    return fn ? fn : dlsym(RTLD_NEXT, symbol);
}

void ggml_backend_dev_memory(ggml_backend_dev_t device, size_t * free, size_t * total) {
    static void (*real)(ggml_backend_dev_t, size_t *, size_t *) = NULL;
    static const char * (*dev_name)(ggml_backend_dev_t) = NULL;
    if (!real) real = (void (*)(ggml_backend_dev_t, size_t *, size_t *)) ggml_base("ggml_backend_dev_memory");
    if (!dev_name) dev_name = (const char * (*)(ggml_backend_dev_t)) ggml_base("ggml_backend_dev_name");
    const char * spec = getenv("FAKE_DEVICE_MEMORY");
    const char * name = dev_name ? dev_name(device) : NULL;
    if (spec && name) {
        size_t n = strlen(name);
        for (const char * p = spec; *p; ) {
            const char * eq = strchr(p, '=');
            if (!eq) break;
            if ((size_t)(eq - p) == n && strncmp(p, name, n) == 0) {
                size_t mib = strtoull(eq + 1, NULL, 10);
                *free = *total = mib * 1024 * 1024;
                return;
            }
            const char * comma = strchr(eq, ',');
            if (!comma) break;
            p = comma + 1;
        }
    }
    real(device, free, total);
}

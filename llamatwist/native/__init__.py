"""Native bindings: the only package that touches cffi.

``binding`` loads the compiled extension; ``ffi_build`` and ``cdef`` describe
how it is built (imported by setup.py before the extension exists, so this
package's import must stay free of the extension).
"""

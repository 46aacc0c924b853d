# Which instruction-set path each kernel with ISA-specific bodies takes on this CPU, for
# bp.show_config(). The build never uses -march=native: one binary runs on any x86-64 CPU, and
# a kernel with faster bodies for newer CPUs carries them side by side and picks one at run time.
#
# _activations.pxd's row functions (tanh, and exp for softmax) carry GCC's target_clones on
# x86-64 Linux: the loader's resolver picks the x86-64-v3 body (AVX2 + FMA) where the CPU has
# it, else the default (SSE2) one. This module asks the CPU the same question, so the report
# names the body that runs, and registers the answer in bpcore.KERNEL_PATHS, where any other
# kernel module with run-time-chosen bodies registers its own (bpcore.register_kernel_path).

from bpcore import register_kernel_path

cdef extern from *:
    """
    #if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
      #define BP_HAS_CLONES 1
      static int bp_cpu_x86_64_v3(void) {
          __builtin_cpu_init();
          return __builtin_cpu_supports("x86-64-v3") != 0;
      }
    #else
      #define BP_HAS_CLONES 0
      static int bp_cpu_x86_64_v3(void) { return 0; }
    #endif
    """
    int BP_HAS_CLONES
    int bp_cpu_x86_64_v3() noexcept nogil


def x86_64_v3():
    """True when the CPU has the x86-64-v3 level (AVX2, FMA, BMI2...), as GCC's resolver sees it."""
    return bool(bp_cpu_x86_64_v3())


def activation_rows_path():
    """The body the vectorised tanh / exp rows run on this CPU."""
    if not BP_HAS_CLONES:
        return "portable (one body: no target_clones with this compiler or platform)"
    if bp_cpu_x86_64_v3():
        return "x86-64-v3 clone (AVX2 + FMA), chosen at load time"
    return "default clone (x86-64, SSE2), chosen at load time"


register_kernel_path("activation rows (tanh, softmax's exp)", activation_rows_path())

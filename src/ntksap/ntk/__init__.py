"""The empirical neural tangent kernel of any model, masked or not (reference section 7).

    K = ntksap.ntk.empirical_ntk(model, x)          # (n k) x (n k), row i * k + c
    eigs = ntksap.ntk.eigenvalues(K)                 # float64, largest first
    ntksap.ntk.ntk_trace(model, x)                   # exact, without forming K
    ntksap.ntk.hutchinson_trace(model, x)            # unbiased forward-mode estimate

The spectrum of a run directory (``ntk_spectrum.json``) is :mod:`ntksap.runs.spectrum`'s: this
package is mathematics on a model and inputs and reads no run directory.
"""

from .compare import SpectrumComparison, compare_spectra, mask_label, write_comparison
from .jacobian import JacobianRows, jacobian_rows
from .kernel import empirical_ntk, symmetric_gram
from .memory import format_bytes, parse_bytes
from .plots import plot_spectra, write_table
from .spectrum import condition_number, eigenvalues, spectrum_distance, spectrum_summary
from .trace import (
    TraceEstimate,
    finite_difference_trace,
    hutchinson_trace,
    jacobian_sq_norms,
    ntk_trace,
)

__all__ = [
    "JacobianRows",
    "SpectrumComparison",
    "TraceEstimate",
    "compare_spectra",
    "condition_number",
    "eigenvalues",
    "empirical_ntk",
    "finite_difference_trace",
    "format_bytes",
    "hutchinson_trace",
    "jacobian_rows",
    "jacobian_sq_norms",
    "mask_label",
    "ntk_trace",
    "parse_bytes",
    "plot_spectra",
    "spectrum_distance",
    "spectrum_summary",
    "symmetric_gram",
    "write_comparison",
    "write_table",
]

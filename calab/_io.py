"""``calab._io``: the module path calab 0.3.0 kept its file functions under.

Code written against that layout (``from calab._io import deconvolve_from_export,
load_export_params``) keeps working.  The functions are the public ones of :mod:`calab.io`
(also ``calab.deconvolve_from_export`` and so on); this path is kept for compatibility
only, and no other private module path of 0.3.0 is (besides ``python -m calab._cli``).
"""

from calab.io import deconvolve_from_export, load_export_params, load_tuning_data, save_for_tuning

__all__ = ["deconvolve_from_export", "load_export_params", "load_tuning_data", "save_for_tuning"]

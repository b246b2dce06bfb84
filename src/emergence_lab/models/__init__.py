"""The models, one module per option (each calls `MODELS.add`), and the initializations
(`inits`, the `INITS` registry). The options are the entries of `MODELS`; every module of this
package is imported here, so adding a model is one file here (or a plugin module, see
`registry.load_plugins`) and one YAML in conf/model/.

May import `measure` (the traced unit graph) and `registry`.
"""

from __future__ import annotations

from emergence_lab.models.base import ACTIVATIONS, MODELS, ModelConfig, build_model, forward_order
from emergence_lab.models.inits import INITS, InitConfig
from emergence_lab.registry import import_submodules

import_submodules(__name__)

__all__ = ["ACTIVATIONS", "INITS", "MODELS", "InitConfig", "ModelConfig", "build_model",
           "forward_order"]

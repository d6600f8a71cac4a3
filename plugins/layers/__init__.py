"""Building blocks shared by the built-in plugins (and free for third-party ones to use).

* :mod:`.attention`: ``MultiHeadAttention`` and ``TransformerBlock`` on ``mmcore_kernels.cross_attention``
  (the attention fusions and the captioning decoder), ``key_lengths``.
* :mod:`.activations`: ``ACTIVATIONS`` (the ``activation:`` option's choices) and ``activation()``.
* :mod:`.mlp`: ``mlp()``, the dropout + (hidden GELU layer) + linear map of the regression and multilabel heads.
* :mod:`.freeze`: ``apply_freeze()``, the ``freeze: true | false | n`` option of pretrained encoders.
* :mod:`.pooling`: ``max_pool_2x2`` / ``MaxPool2x2``, 2x2 max pooling through the CPU's faster kernel.
* :mod:`.options`: ``check_positive``, ``check_dropout``, ``check_heads`` (messages name the option).
"""

from mmcore_plugins.layers.activations import ACTIVATIONS, activation
from mmcore_plugins.layers.attention import MultiHeadAttention, TransformerBlock, key_lengths
from mmcore_plugins.layers.freeze import apply_freeze, check_freeze
from mmcore_plugins.layers.mlp import mlp
from mmcore_plugins.layers.options import check_dropout, check_heads, check_positive
from mmcore_plugins.layers.pooling import MaxPool2x2, max_pool_2x2

__all__ = [
    "ACTIVATIONS",
    "MaxPool2x2",
    "MultiHeadAttention",
    "TransformerBlock",
    "activation",
    "apply_freeze",
    "check_dropout",
    "check_freeze",
    "check_heads",
    "check_positive",
    "key_lengths",
    "max_pool_2x2",
    "mlp",
]

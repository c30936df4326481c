"""The base layer: what every other package of EquiRL may import, and nothing else.

Layers (``tests/test_layers.py`` fails on an upward import or a cycle)::

    platform  ->  algorithms  ->  envs  ->  fairness  ->  base

``base`` imports no other package of the project; it holds

``base.errors``    user-facing errors (``UsageError``: exit code 2, message names the field);
``base.registry``  one registry per plug-in point (duplicate names raise, unknown names list
                   the known ones, lazy ``"module:attr"`` entries);
``base.config``    typed configs: dataclass fields declared with :func:`base.config.option`
                   (one doc per field), built from YAML + ``--set`` overrides with coercion and
                   errors naming the field; the same field metadata renders ``--help``, the
                   config tables in ``docs/`` and a run's MLflow params.
"""

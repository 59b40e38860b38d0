"""fipo_nb inside other training engines, one module per engine: `verl` (the scale-out path) and `trl`.

Each module imports its engine lazily: `import fipo_nb` never needs any of them, and the core
and the trainer never import this package.
"""

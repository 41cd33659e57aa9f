"""bsviz: 3D blendshapes for facial expression recognition (Wang et al., Sci China Inf Sci 2020)."""

__version__ = "0.1.0"

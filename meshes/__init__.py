"""The shipped ICT FaceKit rig, as package data: installed as ``bsviz.meshes`` (see ``bsviz.assets``)."""

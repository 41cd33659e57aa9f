"""The shipped networks and bundles, as package data: installed as ``bsviz.models`` (see ``bsviz.assets``)."""

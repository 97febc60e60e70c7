"""Request and response models, named by direction: ``XCreate`` / ``XUpdate`` in, ``XPublic`` out."""

"""Built-in modality plugins. Each subpackage registers itself under the ``zoo.modalities`` entry points,
exactly as an outside package would; nothing imports a modality directly."""

"""keras_cv's weight files: the legacy Keras HDF5 layout, read and written by position."""

from __future__ import annotations

from ..errors import WeightsError


def load_weights(model, path) -> None:
    """Load a keras_cv weights file into ``model``.

    keras_cv publishes its weights in the legacy Keras HDF5 layout, which Keras 3 reads
    back layer by layer in order; a file for another architecture fails here, with the
    file named in the error.
    """
    try:
        model.load_weights(str(path))
    except Exception as error:  # h5py, ValueError for shape mismatches, ...
        raise WeightsError(f"could not load weights from {path}: {error}") from error


def save_legacy_weights(model, path) -> None:
    """Write ``model``'s weights in the legacy HDF5 layout keras_cv's published files use
    (for test fixtures, and the ``--weights DIR`` layout an import writes)."""
    import h5py
    from keras.src.legacy.saving.legacy_h5_format import save_weights_to_hdf5_group

    with h5py.File(path, "w") as handle:
        save_weights_to_hdf5_group(handle, model)

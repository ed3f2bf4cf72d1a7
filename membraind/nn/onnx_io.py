"""ONNX export and import, and inference with ONNX Runtime.

An exported network takes ``em`` (N, 1, H, W) float32 in [0, 1] (already normalised
as the bundle's ``normalization`` says) and returns ``probabilities`` (N, C, H, W): the
softmax is part of the graph, so any ONNX runtime gives usable output directly. Batch,
height and width are dynamic (height and width must be multiples of 2**depth). The
bundle's model.json travels inside the file (metadata key ``membraind.model_json``).

Imports bring networks trained elsewhere into bundles: an ONNX file (kept as
``model.onnx``; inference only) or a PyTorch state dict that fits membraind's U-Net.
"""

from __future__ import annotations

import copy
import os
import pickle
import shutil
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
import torch
from torch import nn

from membraind.atomic import atomic_path, sibling
from membraind.errors import InputError
from membraind.groundtruth.normalization import IntensityNormalization
from membraind.nn.bundle import (
    CURRENT_FORMAT,
    METADATA_FILE,
    ONNX_FILE,
    Bundle,
    ModelMetadata,
    apply_state_dict,
    default_class_names,
    load_bundle,
    metadata_from_json,
    save_bundle,
)
from membraind.nn.settings import UNetConfig
from membraind.nn.unet import UNet

INPUT_NAME = "em"
OUTPUT_NAME = "probabilities"
META_JSON_KEY = "membraind.model_json"
META_VERSION_KEY = "membraind.format_version"


class _WithSoftmax(nn.Module):
    """The U-Net followed by a softmax over classes, so the graph outputs probabilities."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(x), dim=1)


def _save_with_metadata(proto: onnx.ModelProto, metadata: ModelMetadata, out: Path) -> Path:
    """Embed ``metadata`` in ``proto``, check it and write it to ``out`` atomically."""
    props = {p.key: p.value for p in proto.metadata_props}
    props[META_JSON_KEY] = metadata.model_dump_json()
    props[META_VERSION_KEY] = str(CURRENT_FORMAT)
    del proto.metadata_props[:]
    for key, value in props.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(proto)
    with atomic_path(out) as tmp:
        onnx.save_model(proto, str(tmp))
    return out


def export_onnx(bundle: Bundle, out: Path, opset: int = 17) -> Path:
    """Export ``bundle``'s network to the ONNX file ``out`` (softmax included, metadata embedded)."""
    out = Path(out)
    if bundle.model is None:
        # An ONNX import is already a graph; re-save it with the bundle's metadata.
        if bundle.onnx_path is None:
            raise InputError(f"bundle {bundle.path} holds neither weights nor an ONNX network; nothing to export")
        return _save_with_metadata(onnx.load(str(bundle.onnx_path)), bundle.metadata, out)
    config = bundle.metadata.architecture
    wrapped = _WithSoftmax(copy.deepcopy(bundle.model).cpu().float()).eval()
    side = 2 * config.multiple  # any valid size; the axes are dynamic
    example = torch.zeros(1, config.in_channels, side, side)
    axes = {0: "batch", 2: "height", 3: "width"}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = sibling(out, "export")
    try:
        with warnings.catch_warnings():
            # The TorchScript-based exporter is deprecated but, unlike the dynamo one,
            # needs no extra package (onnxscript) and gives a plain static graph.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                wrapped,
                (example,),
                str(tmp),
                dynamo=False,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes},
                opset_version=opset,
                do_constant_folding=True,
            )
        proto = onnx.load(str(tmp))
    finally:
        tmp.unlink(missing_ok=True)
    proto.producer_name = "membraind"
    proto.doc_string = f"membraind U-Net '{bundle.metadata.name}': em (N,1,H,W) in [0,1] -> probabilities (N,C,H,W)"
    return _save_with_metadata(proto, bundle.metadata, out)


def _softmax(x: np.ndarray, axis: int = 1) -> np.ndarray:
    shifted = np.exp(x - x.max(axis=axis, keepdims=True))
    return shifted / shifted.sum(axis=axis, keepdims=True)


def _check_batch(em: np.ndarray, channels: int = 1) -> np.ndarray:
    if em.ndim != 4 or em.shape[1] != channels:
        raise ValueError(f"expected an (N, {channels}, H, W) array, got shape {em.shape}")
    return np.ascontiguousarray(em, dtype=np.float32)


class OnnxPredictor:
    """Class probabilities from an ONNX network with ONNX Runtime (CPU unless ``providers`` says otherwise)."""

    def __init__(self, path: Path, providers: list[str] | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"ONNX model {self.path} does not exist; export one with 'membraind export-onnx'")
        try:
            self.session = ort.InferenceSession(str(self.path), providers=providers or ["CPUExecutionProvider"])
        except Exception as exc:
            raise InputError(f"ONNX Runtime cannot load {self.path} ({exc}); check that it is an ONNX model") from None
        embedded = self.session.get_modelmeta().custom_metadata_map.get(META_JSON_KEY)
        self.metadata: ModelMetadata | None = (
            metadata_from_json(embedded, f"the metadata embedded in {self.path}") if embedded else None
        )
        self._input = self.session.get_inputs()[0].name
        self._output = self.session.get_outputs()[0].name
        self._logits = self.metadata is not None and self.metadata.onnx_outputs == "logits"

    def predict(self, em: np.ndarray) -> np.ndarray:
        """``em`` (N, 1, H, W) float32, normalised -> probabilities (N, C, H, W) float32."""
        scores = self.session.run([self._output], {self._input: _check_batch(em)})[0]
        return (_softmax(scores) if self._logits else scores).astype(np.float32, copy=False)


@torch.no_grad()
def torch_probabilities(model: UNet, em: np.ndarray) -> np.ndarray:
    """Same contract as :meth:`OnnxPredictor.predict`, computed by PyTorch in eval mode."""
    x = torch.from_numpy(_check_batch(em, model.config.in_channels))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        probabilities = torch.softmax(model(x.to(device)).float(), dim=1)
    finally:
        model.train(was_training)
    return probabilities.cpu().numpy()


# -- imports ---------------------------------------------------------------------------


def _static_dim(value_info: onnx.ValueInfoProto, axis: int) -> int | None:
    dims = value_info.type.tensor_type.shape.dim
    if axis >= len(dims) or not dims[axis].HasField("dim_value"):
        return None
    return dims[axis].dim_value


def _rank(value_info: onnx.ValueInfoProto) -> int | None:
    tensor_type = value_info.type.tensor_type
    return len(tensor_type.shape.dim) if tensor_type.HasField("shape") else None


def _check_onnx_io(proto: onnx.ModelProto, source: Path) -> int | None:
    """Check that ``proto`` takes one (N, 1, H, W) image and returns class scores; returns C when static."""
    initializers = {init.name for init in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in initializers]
    if len(inputs) != 1 or len(proto.graph.output) < 1:
        raise InputError(
            f"{source} has {len(inputs)} inputs and {len(proto.graph.output)} outputs; membraind needs a network "
            "with one (N, 1, H, W) image input and a (N, classes, H, W) output"
        )
    if _rank(inputs[0]) not in (None, 4) or _rank(proto.graph.output[0]) not in (None, 4):
        raise InputError(
            f"{source} takes a rank-{_rank(inputs[0])} input and gives a rank-{_rank(proto.graph.output[0])} output; "
            "membraind needs (N, 1, H, W) in and (N, classes, H, W) out"
        )
    channels = _static_dim(inputs[0], 1)
    if channels not in (None, 1):
        raise InputError(
            f"{source} takes {channels} input channels; membraind feeds one gray EM channel (N, 1, H, W): "
            "re-export the network with a one-channel input"
        )
    return _static_dim(proto.graph.output[0], 1)


def _probe(path: Path, patch_size: int) -> np.ndarray:
    """Run the network once on a patch-sized input: proves it works and shows what it outputs."""
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        em = np.random.default_rng(0).random((1, 1, patch_size, patch_size), dtype=np.float32)
        return session.run(None, {session.get_inputs()[0].name: em})[0]
    except Exception as exc:
        raise InputError(
            f"ONNX Runtime cannot run {path} on a (1, 1, {patch_size}, {patch_size}) input ({exc}); "
            "check the file and the patch size"
        ) from None


def _looks_like_probabilities(scores: np.ndarray) -> bool:
    return bool(scores.min() >= 0 and scores.max() <= 1 and np.allclose(scores.sum(axis=1), 1, atol=1e-3))


def import_onnx(
    onnx_file: Path,
    out: Path,
    name: str,
    normalization: IntensityNormalization,
    patch_size: int,
    class_names: list[str] | None = None,
    onnx_outputs: Literal["probabilities", "logits"] | None = None,
    architecture: UNetConfig | None = None,
    **recorded: Any,
) -> Bundle:
    """Make the bundle folder ``out`` from an ONNX network trained elsewhere.

    The network must take (N, 1, H, W) float32 and return (N, C, H, W) class scores
    (C = 2 or 3, channel order as ``class_names``). ``onnx_outputs`` says whether those
    are probabilities or logits; when None it is found by running the network once.
    ``architecture`` matters only for its ``multiple`` (inputs are padded to it); by
    default it comes from membraind metadata embedded in the file, else a depth-4 U-Net.
    ``recorded``: what else the bundle's metadata says of it (:data:`IMPORT_FIELDS`: ``mip``,
    ``voxel_size_nm``, ``version``).
    """
    onnx_file, out = Path(onnx_file), Path(out)
    if not onnx_file.is_file():
        raise InputError(f"ONNX file {onnx_file} does not exist; check the path")
    if out.exists():
        raise InputError(f"{out} already exists; choose a new folder for the imported bundle")
    try:
        proto = onnx.load(str(onnx_file))
        onnx.checker.check_model(proto)
    except Exception as exc:
        raise InputError(f"{onnx_file} is not a valid ONNX model ({type(exc).__name__}: {exc})") from None
    classes = _check_onnx_io(proto, onnx_file)
    scores = _probe(onnx_file, patch_size)
    classes = classes or scores.shape[1]
    if scores.ndim != 4 or classes not in (2, 3) or scores.shape[1] != classes:
        raise InputError(
            f"{onnx_file} outputs shape {scores.shape}; membraind needs (N, C, H, W) class scores with C = 2 "
            "(interior, membrane) or 3 (interior, membrane, third)"
        )
    embedded = {p.key: p.value for p in proto.metadata_props}.get(META_JSON_KEY)
    if architecture is None:
        architecture = metadata_from_json(embedded, str(onnx_file)).architecture if embedded else UNetConfig(classes=classes)
    if architecture.classes != classes:
        architecture = architecture.model_copy(update={"classes": classes})
    if class_names is not None and len(class_names) != classes:
        raise InputError(f"class_names {class_names} must name each of the {classes} output channels of {onnx_file}")
    metadata = ModelMetadata(
        name=name,
        architecture=architecture,
        class_names=class_names or default_class_names(classes),
        normalization=normalization,
        patch_size=patch_size,
        source="onnx-import",
        onnx_outputs=onnx_outputs or ("probabilities" if _looks_like_probabilities(scores) else "logits"),
        training={"imported_from": str(onnx_file.resolve())},
        **_recorded(recorded),
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = sibling(out, "import")
    tmp.mkdir()
    try:
        _save_with_metadata(proto, metadata, tmp / ONNX_FILE)
        (tmp / METADATA_FILE).write_text(metadata.model_dump_json(indent=2), encoding="utf-8")
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return load_bundle(out)


#: Metadata fields an import may set beside those it works out itself.
IMPORT_FIELDS = ("mip", "voxel_size_nm", "version")


def _recorded(recorded: dict[str, Any]) -> dict[str, Any]:
    unknown = set(recorded) - set(IMPORT_FIELDS)
    if unknown:
        raise TypeError(f"an import records only {', '.join(IMPORT_FIELDS)}, not {', '.join(sorted(unknown))}")
    return {key: value for key, value in recorded.items() if value is not None}


def _read_state_dict(weights: Path) -> dict[str, torch.Tensor]:
    suffix = weights.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        loader = lambda: load_file(str(weights))  # noqa: E731
    elif suffix in (".pt", ".pth", ".ckpt"):
        # weights_only: tensors and plain containers only; never runs pickled code.
        loader = lambda: torch.load(str(weights), map_location="cpu", weights_only=True)  # noqa: E731
    else:
        raise InputError(f"{weights}: unknown weights format '{suffix}'; give a .safetensors, .pt or .pth file")
    try:
        state = loader()
    except pickle.UnpicklingError:
        raise InputError(
            f"{weights} holds pickled Python objects besides tensors (e.g. a whole model), which membraind does not "
            "load because unpickling can run arbitrary code; save model.state_dict() instead"
        ) from None
    except Exception as exc:
        raise InputError(
            f"cannot read {weights} as a PyTorch state dict ({type(exc).__name__}: {str(exc)[:300]}); "
            "save it with torch.save(model.state_dict(), ...) or safetensors"
        ) from None
    # Training checkpoints often wrap the state dict; DataParallel prefixes every key.
    for wrapper in ("state_dict", "model_state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"{weights} does not hold a state dict (a mapping of names to tensors); save model.state_dict()")
    return {k.removeprefix("module."): v for k, v in state.items()}


def import_state_dict(
    weights: Path,
    out: Path,
    architecture: UNetConfig,
    name: str,
    normalization: IntensityNormalization,
    patch_size: int,
    class_names: list[str] | None = None,
    **recorded: Any,
) -> Bundle:
    """Make the bundle folder ``out`` from a state dict of membraind's U-Net trained elsewhere
    (``class_names``, ``recorded``: as for :func:`import_onnx`)."""
    weights = Path(weights)
    if not weights.is_file():
        raise InputError(f"weights file {weights} does not exist; check the path")
    if class_names is not None and len(class_names) != architecture.classes:
        raise InputError(f"class_names {class_names} must name each of the {architecture.classes} output channels "
                         f"of the network (architecture.classes)")  # fmt: skip
    model = UNet(architecture)
    apply_state_dict(model, _read_state_dict(weights), weights)
    metadata = ModelMetadata(
        name=name,
        architecture=architecture,
        class_names=class_names or default_class_names(architecture.classes),
        normalization=normalization,
        patch_size=patch_size,
        source="state-dict-import",
        training={"imported_from": str(weights.resolve())},
        **_recorded(recorded),
    )
    save_bundle(Path(out), model, metadata)
    return load_bundle(Path(out))


"""A loaded model: artifact + tokenizer + interpreter, with buffers prepared once.

The per-inference path is: tokenize into preallocated arrays, set_tensor per input, invoke,
read logits. Nothing on that path allocates more than the token list.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from .artifact import Artifact, read_artifact
from .backends import DEFAULT_DELEGATE, Backend, open_interpreter, resolve_backend, with_delegate
from edge_slm.common.errors import EXIT_RUNTIME_REFUSED, EdgeError

DEFAULT_SEQ_LEN = 128


@dataclass
class Prediction:
    index: int
    label: str
    probability: float
    probabilities: list
    logits: list


@dataclass
class InputSlot:
    role: str      # input_ids | attention_mask | token_type_ids (guessed from names in a plain .tflite)
    index: int     # interpreter tensor index
    buffer: np.ndarray


class Model:
    def __init__(self, artifact: Artifact, backend: Backend, interpreter, init_seconds: float):
        self.artifact = artifact
        self.backend = backend
        self.interpreter = interpreter
        self.init_seconds = init_seconds
        self.metadata = artifact.metadata
        self.labels = list(artifact.labels)
        self.tokenizer = None
        self.seq_len = None
        self.slots = self._input_slots()
        self.output_index = self._output_index()
        self.buffers = {slot.role: slot.buffer for slot in self.slots}
        if artifact.has_metadata:
            from .tokenizer import WordPieceTokenizer  # deferred: a plain .tflite needs no tokenizer tables

            self.tokenizer = WordPieceTokenizer.from_metadata(artifact.vocab_text, self.metadata["tokenizer"])
            self.seq_len = self.metadata["tokenizer"]["max_seq_len"]
            graph_len = self.slots[0].buffer.shape[-1]
            if graph_len != self.seq_len:
                raise EdgeError(f"{artifact.path}: metadata max_seq_len {self.seq_len} != graph input length "
                                f"{graph_len}", "re-create the artifact with edge-convert")

    # ---- set-up -----------------------------------------------------------------------------
    def _input_slots(self) -> list:
        details = self.interpreter.get_input_details()
        roles = _roles_by_tensor_name(self.metadata, details) if self.metadata else {}
        slots = []
        for d in details:
            shape = tuple(int(x) if x > 0 else 1 for x in d["shape"])
            role = roles.get(d["name"]) or _guess_role(d["name"])
            slots.append(InputSlot(role, d["index"], np.zeros(shape, dtype=d["dtype"])))
        return slots

    def _output_index(self) -> int:
        details = self.interpreter.get_output_details()
        if self.metadata:
            wanted = {o["name"] for o in self.metadata["outputs"] if o.get("role") == "logits"}
            for d in details:
                if d["name"] in wanted:
                    return d["index"]
        return details[0]["index"]

    # ---- facts ------------------------------------------------------------------------------
    @property
    def random_weights(self) -> Optional[bool]:
        return self.metadata["random_weights"] if self.metadata else None

    @property
    def file_bytes(self) -> int:
        return self.artifact.file_size

    def describe(self) -> dict:
        return {
            "path": str(self.artifact.path),
            "file_bytes": self.artifact.file_size,
            "has_metadata": self.artifact.has_metadata,
            "metadata": self.metadata,
            "inputs": [{"role": s.role, "shape": list(s.buffer.shape), "dtype": str(s.buffer.dtype)}
                       for s in self.slots],
        }

    # ---- inference --------------------------------------------------------------------------
    def require_tokenizer(self) -> None:
        if self.tokenizer is None:
            raise EdgeError(f"{self.artifact.path} is a plain .tflite without edge-slm metadata: it has "
                            "no vocabulary, so it cannot take text", "use --bench (random inputs), or "
                            "convert the model with edge-convert")

    def prepare(self, text: str) -> int:
        """Tokenize `text` into the input buffers; returns the number of real tokens."""
        return self.tokenizer.encode_into(text, self.seq_len, self.buffers)

    def fill_random(self, rng: np.random.Generator) -> None:
        """Random inputs of the right dtype and shape, as TFLite's benchmark_model does."""
        for slot in self.slots:
            buf = slot.buffer
            if np.issubdtype(buf.dtype, np.integer):
                if slot.role == "attention_mask":
                    buf[...] = 1
                elif slot.role == "token_type_ids":
                    buf[...] = 0
                else:  # small ids are valid in any vocabulary
                    buf[...] = rng.integers(1, 100, size=buf.shape, dtype=buf.dtype)
            else:
                buf[...] = rng.standard_normal(buf.shape).astype(buf.dtype)

    def run_prepared(self) -> np.ndarray:
        """set inputs + invoke + read logits of the buffers as they are."""
        interpreter = self.interpreter
        for slot in self.slots:
            interpreter.set_tensor(slot.index, slot.buffer)
        try:
            interpreter.invoke()
        except RuntimeError as e:
            first = next((line for line in str(e).splitlines() if line.strip()), "no message")
            raise EdgeError(f"inference failed in {self.backend.name} {self.backend.version}: {first}",
                            "check that the inputs fit the graph (vocabulary size, sequence length)",
                            exit_code=EXIT_RUNTIME_REFUSED) from None
        return interpreter.get_tensor(self.output_index)

    def logits(self, texts) -> np.ndarray:
        self.require_tokenizer()
        rows = []
        for text in texts:
            self.prepare(text)
            rows.append(self.run_prepared().reshape(-1).astype(np.float32))
        return np.stack(rows) if rows else np.zeros((0, len(self.labels)), np.float32)

    def predict_one(self, text: str) -> Prediction:
        self.require_tokenizer()
        self.prepare(text)
        return self.to_prediction(self.run_prepared())

    def to_prediction(self, raw_logits: np.ndarray) -> Prediction:
        logits = raw_logits.reshape(-1).astype(np.float64)
        probabilities = softmax(logits)
        index = int(np.argmax(logits))
        label = self.labels[index] if index < len(self.labels) else str(index)
        return Prediction(index, label, float(probabilities[index]), probabilities.tolist(), logits.tolist())


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max())
    return shifted / shifted.sum()


def _guess_role(tensor_name: str) -> str:
    """Role of an input of a plain .tflite, from its name (only used for random bench inputs)."""
    name = tensor_name.lower()
    if "mask" in name:
        return "attention_mask"
    if "type" in name or "segment" in name:
        return "token_type_ids"
    return "input_ids"


def _roles_by_tensor_name(metadata: dict, details: list) -> dict:
    """Map interpreter input names to roles; metadata names must match the graph's inputs."""
    graph_names = [d["name"] for d in details]
    roles = {}
    for entry in metadata["inputs"]:
        name = entry["name"]
        if name not in graph_names:
            raise EdgeError(f"metadata names input {name!r}, but the graph's inputs are {graph_names}",
                            "the metadata does not belong to this graph; re-create the artifact")
        roles[name] = entry["role"]
    missing = [n for n in graph_names if n not in roles]
    if missing:
        raise EdgeError(f"graph inputs {missing} have no role in the metadata", "re-create the artifact")
    return roles


def load_model(path, backend: str = "auto", threads: Optional[int] = None, verify: bool = True,
               delegate: str = DEFAULT_DELEGATE) -> Model:
    """Read, verify and load an artifact; `init_seconds` covers read + load + allocate."""
    start = time.perf_counter()
    artifact = read_artifact(Path(path), verify=verify)
    chosen = with_delegate(resolve_backend(backend), delegate)
    interpreter = open_interpreter(chosen, threads=threads, model_path=artifact.path)
    return Model(artifact, chosen, interpreter, init_seconds=time.perf_counter() - start)

"""DARTS recurrent-cell space on Penn Treebank (spec §3): 8 nodes, one predecessor each, activations
tanh / relu / sigmoid / identity; 4^8 * 8! ~ 2.6e9 cells.

Internal architecture: a tuple of 8 ``(activation index, predecessor)`` pairs; activation indices follow
``OPS = (none, tanh, relu, sigmoid, identity)`` as the reference encodes them (0 = ``none`` = unconnected slot, so it
never appears as a node's activation); node i (0-based) takes its input from state s_p, 0 <= p <= i, where s_0 is the
cell's initial state. Files and reports use DARTS's notation::

    Genotype(recurrent=[('sigmoid', 0), ('relu', 1), ('relu', 1), ('identity', 1), ('tanh', 2), ('sigmoid', 5),
                        ('tanh', 3), ('relu', 5)], concat=range(1, 9))

which ``decode`` parses without ``eval``: every malformed input raises ArchError with a one-line reason.
"""
from __future__ import annotations

import re

import numpy as np

from pydantic import Field

from eps.settings import Number, section
from eps.errors import ArchError, ConfigError
from eps.space import MAX_CHANNELS, MAX_CLASSES, SpaceParams, SpaceSettings
from eps.spaces.darts_rnn.task import PTBRetrainSettings, PTBSearchSettings, PTBSupernetSettings, PTBWarmupSettings
from eps.spaces.darts_rnn.model import ACTIVATIONS, OPS, STEPS, DartsRNNNetwork, DartsRNNSupernet

NAME = "darts-rnn"
DEFAULT_VOCAB = 10000
CONCAT = tuple(range(1, STEPS + 1))
EXAMPLE = ("Genotype(recurrent=[('sigmoid', 0), ('relu', 1), ('relu', 1), ('identity', 1), ('tanh', 2), "
           "('sigmoid', 5), ('tanh', 3), ('relu', 5)], concat=range(1, 9))")

class RNNSpaceSettings(SpaceSettings):
    hidden_size: int = Field(850, ge=1)          # embedding = hidden = last hidden (tied decoder); the retrained net
    supernet_hidden_size: int | None = Field(None, ge=1)  # None = hidden_size; smaller = a proxy supernet (§5 item 23)
    dropout: Number = Field(0.75, ge=0, lt=1)    # locked dropout on the cell output
    dropouth: Number = Field(0.25, ge=0, lt=1)   # variational dropout on every state multiplied by a matrix
    dropoutx: Number = Field(0.75, ge=0, lt=1)   # variational dropout on the cell input x
    dropouti: Number = Field(0.2, ge=0, lt=1)    # locked dropout on the embedded input
    dropoute: Number = Field(0.1, ge=0, lt=1)    # word-level embedding dropout
    tar_beta: Number = Field(1e-3, ge=0)         # temporal activation regularisation on the cell outputs
    ar_alpha: Number = Field(0.0, ge=0)          # activation regularisation on the dropped outputs
    init_range: Number = Field(0.04, gt=0)
    p_opwise: Number = Field(0.2, ge=0, le=1)    # mutation: redraw a node's activation (spec §3.1)
    p_edgewise: Number = Field(0.1, ge=0, le=1)  # mutation: move a node's connection, keeping its activation
    reference_hidden_state: bool = False         # true: carry the state across architecture switches (§6 item 6)


class DartsRNNParams(SpaceParams):
    """DARTS RNN on PTB. All cells have the same size, so the size prior of the selection is a constant."""
    space: RNNSpaceSettings = section(RNNSpaceSettings)
    supernet: PTBSupernetSettings = section(PTBSupernetSettings)
    warmup: PTBWarmupSettings = section(PTBWarmupSettings)
    search: PTBSearchSettings = section(PTBSearchSettings)
    retrain: PTBRetrainSettings = section(PTBRetrainSettings)

    def problems(self):
        n = self.supernet.data_subset
        for stage in ("warmup", "search"):
            b = getattr(self, stage).batch_size
            if n and n < 3 * b:
                yield "supernet.data_subset", (f"{n} tokens give fewer than 3 rows of {stage}.batch_size {b} "
                                               f"columns; use 0 (all) or at least {3 * b}")


# --- notation ---------------------------------------------------------------------------------------------------

def arch_to_str(arch) -> str:
    nodes = ", ".join(f"('{OPS[op]}', {pred})" for op, pred in arch)
    return f"Genotype(recurrent=[{nodes}], concat=range(1, {STEPS + 1}))"


_TOKEN = re.compile(r"""\s*(?:(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<int>[0-9]+)|(?P<str>'[^'\\\n]*'|"[^"\\\n]*")"""
                    r"""|(?P<punct>[()\[\],=]))""")


def _short(text: str) -> str:
    r = repr(text)
    return r if len(r) <= 90 else r[:87] + "..."


class _Parser:
    """Recursive descent over the tokens of a DARTS RNN genotype; no eval."""

    def __init__(self, text: str):
        self.text = text
        self.tokens: list[tuple[str, str]] = []
        pos, n = 0, len(text)
        while pos < n:
            m = _TOKEN.match(text, pos)
            if m is None or m.end() == pos:
                if text[pos:].strip() == "":
                    break
                bad = text[pos:].lstrip()[:1]
                self.fail(f"unexpected character {bad!r}")
            kind = m.lastgroup
            self.tokens.append((kind, m.group(kind)))
            pos = m.end()
        self.i = 0

    def fail(self, reason: str):
        raise ArchError(f"darts-rnn genotype {_short(self.text)}: {reason}; expected e.g. {EXAMPLE}")

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self, kind: str, value: str | None = None, what: str = "") -> str:
        tok = self.peek()
        if tok is None or tok[0] != kind or (value is not None and tok[1] != value):
            got = "end of text" if tok is None else repr(tok[1])
            self.fail(f"expected {what or value or kind}, got {got}")
        self.i += 1
        return tok[1]

    def accept(self, value: str) -> bool:
        tok = self.peek()
        if tok is not None and tok[0] == "punct" and tok[1] == value:
            self.i += 1
            return True
        return False

    def integer(self, what: str) -> int:
        text = self.take("int", what=what)
        if len(text) > 6:
            self.fail(f"{what} {text} is out of range")
        return int(text)

    def sequence(self, item, what: str) -> list:
        """``[a, b, ...]`` or ``(a, b, ...)``, trailing comma allowed."""
        tok = self.peek()
        if tok is None or tok[1] not in ("[", "("):
            self.fail(f"expected a list for {what}, got {'end of text' if tok is None else repr(tok[1])}")
        close = "]" if self.take("punct") == "[" else ")"
        items = []
        while not self.accept(close):
            items.append(item())
            if not self.accept(","):
                self.take("punct", close, what=f"',' or {close!r} in {what}")
                break
        return items

    def node(self) -> tuple[str, int]:
        tok = self.peek()
        if tok is None or tok[1] not in ("(", "["):
            self.fail(f"expected an (activation, predecessor) pair, got "
                      f"{'end of text' if tok is None else repr(tok[1])}")
        close = ")" if self.take("punct") == "(" else "]"
        name = self.take("str", what="a quoted activation name")[1:-1]
        self.take("punct", ",", what="',' between activation and predecessor")
        pred = self.integer("predecessor")
        self.accept(",")
        self.take("punct", close, what=f"{close!r} closing an (activation, predecessor) pair")
        return name, pred

    def concat(self) -> list[int]:
        tok = self.peek()
        if tok is not None and tok == ("name", "range"):
            self.i += 1
            self.take("punct", "(")
            a = self.integer("range start")
            if self.accept(")"):
                return list(range(a))
            self.take("punct", ",", what="',' in range(start, stop)")
            b = self.integer("range stop")
            self.take("punct", ")", what="')' closing range(start, stop)")
            return list(range(a, b))
        return self.sequence(lambda: self.integer("concat entry"), "concat")

    def genotype(self) -> tuple[list, list]:
        self.take("name", "Genotype", what="'Genotype('")
        self.take("punct", "(", what="'(' after Genotype")
        found: dict[str, object] = {}
        while not self.accept(")"):
            key = self.take("name", what="'recurrent=' or 'concat='")
            if key not in ("recurrent", "concat"):
                self.fail(f"unknown field {key!r} (a DARTS RNN genotype has recurrent and concat)")
            if key in found:
                self.fail(f"field {key!r} given twice")
            self.take("punct", "=", what=f"'=' after {key}")
            found[key] = self.sequence(self.node, "recurrent") if key == "recurrent" else self.concat()
            if not self.accept(","):
                self.take("punct", ")", what="',' or ')' closing Genotype(...)")
                break
        if self.peek() is not None:
            self.fail(f"unexpected text after the closing ')': {self.peek()[1]!r}")
        for key in ("recurrent", "concat"):
            if key not in found:
                self.fail(f"missing field {key}=")
        return found["recurrent"], found["concat"]


def str_to_arch(text) -> tuple[tuple[int, int], ...]:
    """Parse DARTS's ``Genotype(recurrent=[...], concat=range(1, 9))``; anything malformed raises ArchError."""
    if not isinstance(text, str):
        raise ArchError(f"darts-rnn genotype must be a string, got {type(text).__name__}")
    parser = _Parser(text)
    recurrent, concat = parser.genotype()
    if len(recurrent) != STEPS:
        parser.fail(f"recurrent has {len(recurrent)} node(s), expected {STEPS}")
    arch = []
    for i, (name, pred) in enumerate(recurrent):
        if name == "none":
            parser.fail(f"node {i} has activation 'none'; a node's activation is one of {', '.join(ACTIVATIONS)}")
        if name not in ACTIVATIONS:
            parser.fail(f"node {i}: unknown activation {name!r}; allowed: {', '.join(ACTIVATIONS)}")
        if not 0 <= pred <= i:
            parser.fail(f"node {i}: predecessor {pred} out of range; node {i} can read states 0..{i}")
        arch.append((OPS.index(name), pred))
    if list(concat) != list(CONCAT):
        parser.fail(f"concat is {list(concat)}, expected range(1, {STEPS + 1}) (the cell averages all 8 nodes)")
    return tuple(arch)


def check_arch(arch) -> tuple[tuple[int, int], ...]:
    """An internal architecture validated (used by the builders and tests)."""
    try:
        nodes = tuple((int(op), int(pred)) for op, pred in arch)
    except (TypeError, ValueError):
        raise ArchError(f"darts-rnn architecture {arch!r} must be {STEPS} (activation, predecessor) pairs") from None
    if len(nodes) != STEPS or not all(1 <= op < len(OPS) and 0 <= pred <= i for i, (op, pred) in enumerate(nodes)):
        raise ArchError(f"darts-rnn architecture {arch!r} must be {STEPS} (activation 1..{len(OPS) - 1}, "
                        f"predecessor 0..i) pairs")
    return nodes


# --- the space --------------------------------------------------------------------------------------------------

class DartsRNNSpace:
    """The DARTS recurrent-cell space on PTB (spec §3)."""
    name = NAME
    Params = DartsRNNParams
    network_bounds = {"num_classes": (1, MAX_CLASSES), "channels": (1, MAX_CHANNELS)}

    @classmethod
    def from_params(cls, section: dict) -> "DartsRNNSpace":
        return cls(section)

    def __init__(self, section: dict | None = None):
        if section is None:
            section = DartsRNNParams().model_dump()
        self.section = section
        sp = section["space"]
        self.hidden_size = sp["hidden_size"]
        self.supernet_hidden_size = sp["supernet_hidden_size"] or sp["hidden_size"]
        self.p_opwise, self.p_edgewise = sp["p_opwise"], sp["p_edgewise"]
        self.model_options = {k: sp[k] for k in ("dropout", "dropouth", "dropoutx", "dropouti", "dropoute",
                                                 "init_range")}
        self._params_cache: dict = {}

    def sample(self, rng: np.random.Generator) -> tuple[tuple[int, int], ...]:
        """Per node one predecessor uniform in 0..i and one activation uniform in tanh/relu/sigmoid/identity."""
        preds = [int(rng.integers(0, i + 1)) for i in range(STEPS)]
        ops = rng.integers(1, len(OPS), size=STEPS)
        return tuple((int(op), p) for op, p in zip(ops, preds))

    def mutate(self, arch, rng: np.random.Generator) -> tuple[tuple[int, int], ...]:
        """Spec §3.1: per node, w.p. p_opwise redraw the activation (the old one may return); for nodes i >= 1,
        w.p. p_edgewise move the connection to a uniformly chosen *other* predecessor, keeping the activation."""
        out = []
        for i, (op, pred) in enumerate(arch):
            if rng.random() < self.p_opwise:
                op = int(rng.integers(1, len(OPS)))
            if i >= 1 and rng.random() < self.p_edgewise:
                other = int(rng.integers(0, i))          # one of the i predecessors other than `pred`
                pred = other if other < pred else other + 1
            out.append((op, pred))
        return tuple(out)

    def encode(self, arch) -> str:
        return arch_to_str(check_arch(arch))

    def decode(self, text: str) -> tuple[tuple[int, int], ...]:
        return str_to_arch(text)

    def largest(self) -> tuple[tuple[int, int], ...]:
        # Every cell has the same parameters (one matrix per node position); any cell is "largest".
        return tuple((OPS.index("tanh"), i) for i in range(STEPS))

    def build_supernet(self, num_classes: int = DEFAULT_VOCAB) -> DartsRNNSupernet:
        return DartsRNNSupernet(vocab=num_classes, hidden=self.supernet_hidden_size, **self.model_options)

    def network_options(self, num_classes: int | None = None) -> dict:
        """Every ``build_network`` keyword of this space's standalone network for a vocabulary of ``num_classes``
        words (the retrain task's ``network_config``)."""
        return {"num_classes": num_classes or DEFAULT_VOCAB, "channels": self.hidden_size, **self.model_options}

    def build_network(self, arch, num_classes: int | None = None, channels: int | None = None, *,
                      dropout: float | None = None, dropouth: float | None = None, dropoutx: float | None = None,
                      dropouti: float | None = None, dropoute: float | None = None,
                      init_range: float | None = None) -> DartsRNNNetwork:
        """The standalone language model: ``num_classes`` = vocabulary (default 10,000), ``channels`` = embedding =
        hidden size, the dropouts as in the space settings (training mode only); a keyword left out takes the
        space's setting. Forward: tokens (T, B) -> ``RNNOutput`` with logits (T, B, vocabulary)."""
        given = {"dropout": dropout, "dropouth": dropouth, "dropoutx": dropoutx, "dropouti": dropouti,
                 "dropoute": dropoute, "init_range": init_range}
        options = {k: self.model_options[k] if v is None else v for k, v in given.items()}
        return DartsRNNNetwork(check_arch(arch), vocab=num_classes or DEFAULT_VOCAB,
                               hidden=channels or self.hidden_size, **options)

    def num_params(self, arch, num_classes: int | None = None, channels: int | None = None,
                   layers: int | None = None) -> int:
        """Parameters of the standalone network (tied decoder counted once): ``channels`` = embedding/hidden size,
        ``num_classes`` = vocabulary (default 10,000). Built on the meta device, so nothing is allocated."""
        if layers not in (None, 1):
            raise ConfigError(f"darts-rnn has one recurrent cell layer; --layers {layers} is not supported")
        key = (check_arch(arch), num_classes, channels)
        if key not in self._params_cache:
            import torch
            with torch.device("meta"):
                net = self.build_network(arch, num_classes, channels)
            self._params_cache[key] = sum(p.numel() for p in net.parameters())
        return self._params_cache[key]

    def search_task(self, params: dict, data_root, device, seed: int, stage: str = "search"):
        from eps.spaces.darts_rnn.task import PTBSearchTask
        return PTBSearchTask(self, params, stage, data_root, device, seed)

    def retrain_task(self, arch, params: dict, data_root, device, seed: int):
        from eps.spaces.darts_rnn.task import PTBRetrainTask
        return PTBRetrainTask(self, check_arch(arch), params, data_root, device, seed)


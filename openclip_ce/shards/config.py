"""Every setting of ``openclip-ce make-shards``, in one typed object, and the flags that fill it.

:class:`ShardsConfig` goes from the flags to the command, its engine's constructor and the decisions of
:mod:`openclip_ce.shards.setup`, and no further; nothing downstream reads the argparse namespace. It is
frozen: what a run decides from it (threads, tagging ops, filler, masked LM, caption reader, vocabulary)
is a separate value, :class:`~openclip_ce.shards.setup.RunSetup`, and that is all a worker gets.
:meth:`ShardsConfig.output_settings` are the settings that change the bytes written: a resumed run must
use the same ones (checked against ``--out/.make-shards/config.json``).
"""

from __future__ import annotations

import argparse
from dataclasses import MISSING, dataclass, field, fields
from typing import Dict, Optional, Sequence, Tuple

from ..errors import UserError
from ..generation.fillers import DEFAULT_FILLER_MODEL
from ..generation.tagging import SPACY_MODEL_HELP, default_spacy_model
from ..generation.tagging_ops import OPS as TAGGING_OPS
from ..negatives import NEG_TYPES, parse_neg_types
from .devices import parse_device, parse_devices
from .language import parse_languages

# spaCy's limit on one text (``Language.max_length``): a longer caption would fail the tagger, hence its shard
MAX_TAGGED_CHARS = 1_000_000
# settings that change the bytes written: a resumed run must use the same ones
OUTPUT_SETTINGS = ("seed", "types", "filler", "filler_model", "spacy_model", "top_k", "caption_key",
                   "caption_json_field", "max_caption_chars", "languages", "vocab_captions", "vocab_per_tag")


@dataclass(frozen=True)
class ShardsConfig:
    # what to read and where to write
    inputs: Tuple[str, ...] = ()
    out: str = ""
    # generation (decides the output bytes, with the input)
    seed: int = 0
    types: Tuple[str, ...] = NEG_TYPES
    filler: str = "mlm"
    filler_model: str = DEFAULT_FILLER_MODEL
    spacy_model: str = field(default_factory=default_spacy_model)
    top_k: int = 10
    caption_key: str = "txt"
    caption_json_field: Optional[str] = None
    max_caption_chars: int = 2000
    languages: Tuple[str, ...] = ("en",)  # () = every language (no filter)
    vocab_captions: int = 20000
    vocab_per_tag: int = 2000
    # how tagging and the masked LM run (never the output bytes)
    tagging_ops: str = "auto"
    device: str = "cpu"
    fp32: bool = False
    batch_size: int = 256
    chunk_size: int = 512
    # execution
    workers: int = 1
    devices: Optional[Tuple[int, ...]] = None  # local engine: GPU indices for --device cuda (None: all visible)
    threads: int = 0
    engine: str = "local"
    ray_address: Optional[str] = None
    ray_fillers: int = 0
    ray_gpus_per_filler: float = 1.0
    ray_placement_timeout: float = 30.0
    overwrite: bool = False
    skip_bad: bool = False
    log_every: float = 30.0
    progress: bool = True
    log_level: str = "INFO"

    def output_settings(self) -> Dict[str, object]:
        d = {k: getattr(self, k) for k in OUTPUT_SETTINGS}
        d["types"] = list(self.types)
        d["languages"] = list(self.languages) or "all"
        if self.filler != "mlm":
            d.pop("filler_model")
        if self.filler != "vocab":
            d.pop("vocab_captions"), d.pop("vocab_per_tag")
        return d


_DEFAULTS = {f.name: f.default for f in fields(ShardsConfig) if f.default is not MISSING}


def default(name: str):
    """A setting's default: written once, in :class:`ShardsConfig`; the flags take it from there."""
    return _DEFAULTS[name]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="shards: brace patterns ('/data/{00000..00099}.tar'), globs, directories (searched for "
                        "*.tar, *.tar.gz, *.tgz), or @FILE with one path or pattern per line")
    p.add_argument("--out", required=True, help="output root; shard names mirror the inputs' relative names")
    g = p.add_argument_group("generation")
    g.add_argument("--types", default=",".join(default("types")), help="negative types to make (others are null)")
    g.add_argument("--seed", type=int, default=default("seed"),
                   help="output is a function of the input and this seed only")
    g.add_argument("--filler", choices=("mlm", "vocab"), default=default("filler"),
                   help="mlm: masked LM fills; vocab: same-tag words from the corpus's own captions (no model)")
    g.add_argument("--filler-model", default=default("filler_model"),
                   help="masked LM for --filler mlm: hub name or local directory (model + tokenizer)")
    g.add_argument("--spacy-model", default=None, help=f"spaCy pipeline used for POS tags ({SPACY_MODEL_HELP})")
    g.add_argument("--top-k", type=int, default=default("top_k"),
                   help="an MLM fill is drawn among the top-k admissible words")
    g.add_argument("--tagging-ops", choices=("auto",) + TAGGING_OPS, default=default("tagging_ops"),
                   help="matrix multiply of spaCy's tagger: auto measures blis (thinc's default), numpy and torch "
                        "at start and keeps the fastest whose tags equal blis's (recorded in .make-shards/config.json)")
    g.add_argument("--device", default=default("device"),
                   help="device of the masked LM: cpu (in every worker), cuda (local engine: one masked-LM process "
                        "per GPU, fed by all workers; see --devices), cuda:N (= --devices N)")
    g.add_argument("--fp32", action="store_true", help="keep the masked LM in fp32 on GPU (default fp16)")
    g.add_argument("--batch-size", type=int, default=default("batch_size"), help="masked-LM batch size")
    g.add_argument("--chunk-size", type=int, default=default("chunk_size"),
                   help="captions tagged and filled together (a chunk's fills are one request to the masked LM)")
    g.add_argument("--vocab-captions", type=int, default=default("vocab_captions"),
                   help="--filler vocab: captions read (from the first shards) to build the vocabulary")
    g.add_argument("--vocab-per-tag", type=int, default=default("vocab_per_tag"),
                   help="--filler vocab: most frequent words kept per tag")
    d = p.add_argument_group("data")
    d.add_argument("--caption-key", default=None,
                   help=f"member holding the caption (default: {default('caption_key')}, or json with "
                        f"--caption-json-field)")
    d.add_argument("--caption-json-field", default=default("caption_json_field"),
                   help="read the caption from this field (dotted path) of the sample's JSON member")
    d.add_argument("--max-caption-chars", type=int, default=default("max_caption_chars"),
                   help="longer captions pass through with null negatives (counted as caption_too_long)")
    d.add_argument("--languages", default=",".join(default("languages")),
                   help="captions identified (CLD2) as another language pass through with null negatives, counted as "
                        "other_language_caption; with 'en' alone, captions CLD2 calls English or cannot place are "
                        "also read word by word; comma-separated ISO 639-1 codes, or 'all' for no filter (the edits "
                        "use an English tagger and dictionary)")
    r = p.add_argument_group("execution")
    r.add_argument("--workers", type=int, default=default("workers"),
                   help="processes that read, tag and write shards (local processes / Ray tasks in flight); "
                        "with --device cuda they share the GPUs' masked-LM processes: set it to the CPU cores")
    r.add_argument("--devices", default=None,
                   help="local engine with --device cuda: GPU indices that get a masked-LM process (default: every "
                        "visible GPU, at most one per worker), e.g. 0,1,2,3")
    r.add_argument("--workers-per-gpu", type=int, default=None, help=argparse.SUPPRESS)  # gone: a clear error
    r.add_argument("--threads", type=int, default=default("threads"),
                   help="torch / BLAS threads per worker (0: cores / workers)")
    r.add_argument("--engine", choices=("local", "ray"), default=default("engine"))
    r.add_argument("--ray-address", default=default("ray_address"),
                   help="Ray cluster to join ('auto' for the running one); default: start a local Ray")
    r.add_argument("--ray-fillers", type=int, default=default("ray_fillers"),
                   help="masked-LM actors (0: one per GPU with --device cuda, else one)")
    r.add_argument("--ray-gpus-per-filler", type=float, default=default("ray_gpus_per_filler"),
                   help="GPU share of each masked-LM actor (0.5: two actors per GPU)")
    r.add_argument("--ray-placement-timeout", type=float, default=default("ray_placement_timeout"),
                   help="seconds to wait for the cluster to place the masked-LM actors before failing with the "
                        "resources it lacks")
    r.add_argument("--overwrite", action="store_true", help="redo every shard, even complete ones")
    r.add_argument("--skip-bad", action="store_true",
                   help="exit 0 even if some shards could not be read (not when all failed)")
    r.add_argument("--log-every", type=float, default=default("log_every"),
                   help="seconds between log lines when not on a terminal")
    r.add_argument("--no-progress", action="store_true", help="no progress bar, log lines only")


def config_from_args(args: argparse.Namespace) -> ShardsConfig:
    """The typed config of a parsed command line; bad values are a :class:`UserError`."""
    try:
        types = parse_neg_types(args.types)
    except ValueError as e:
        raise UserError(str(e).replace("--ce-neg-types", "--types")) from None
    if args.workers_per_gpu is not None:
        raise UserError("--workers-per-gpu is gone: with --device cuda every GPU has one masked-LM process that "
                        "all workers feed, so set --workers to the CPU cores (e.g. --workers 16)")
    for name in ("top_k", "batch_size", "chunk_size", "workers", "max_caption_chars", "vocab_captions", "vocab_per_tag"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.max_caption_chars > MAX_TAGGED_CHARS:
        raise UserError(f"--max-caption-chars must be <= {MAX_TAGGED_CHARS:,} (the most spaCy tags in one text), "
                        f"got {args.max_caption_chars}")
    if args.caption_json_field is not None and not args.caption_json_field.strip(". "):
        raise UserError("--caption-json-field is empty: give the field's name (a dotted path), or leave the flag out")
    gpf = args.ray_gpus_per_filler
    if not (0 < gpf <= 1 or float(gpf).is_integer()):
        raise UserError(f"--ray-gpus-per-filler must be in (0, 1] or a whole number (Ray's rule), got {gpf:g}")
    if args.ray_placement_timeout <= 0:
        raise UserError(f"--ray-placement-timeout must be > 0, got {args.ray_placement_timeout:g}")
    if args.threads < 0:
        raise UserError(f"--threads must be >= 0 (0: cores / workers), got {args.threads}")
    if args.ray_fillers < 0:
        raise UserError(f"--ray-fillers must be >= 0, got {args.ray_fillers}")
    kind, index = parse_device(args.device)  # a malformed cuda device is a usage error, found first
    if args.engine == "ray" and (args.devices or index is not None):
        raise UserError("--engine ray places one masked-LM actor per GPU itself: use --device cuda with "
                        "--ray-fillers / --ray-gpus-per-filler, not --devices or cuda:N")
    caption_key = args.caption_key or ("json" if args.caption_json_field else default("caption_key"))
    return ShardsConfig(
        inputs=tuple(args.inputs), out=args.out,
        seed=args.seed, types=types, filler=args.filler, filler_model=args.filler_model,
        spacy_model=args.spacy_model or default_spacy_model(), top_k=args.top_k, caption_key=caption_key,
        caption_json_field=args.caption_json_field, max_caption_chars=args.max_caption_chars,
        languages=parse_languages(args.languages),
        vocab_captions=args.vocab_captions, vocab_per_tag=args.vocab_per_tag, tagging_ops=args.tagging_ops,
        device=args.device, fp32=args.fp32, batch_size=args.batch_size, chunk_size=args.chunk_size,
        workers=args.workers, devices=parse_devices(args.devices),
        threads=args.threads, engine=args.engine, ray_address=args.ray_address,
        ray_fillers=args.ray_fillers, ray_gpus_per_filler=args.ray_gpus_per_filler,
        ray_placement_timeout=args.ray_placement_timeout,
        overwrite=args.overwrite, skip_bad=args.skip_bad, log_every=args.log_every,
        progress=not args.no_progress, log_level=getattr(args, "log_level", default("log_level")),
    )


def config_for(inputs: Sequence[str], out: str, **settings) -> ShardsConfig:
    """A config as the command line would give it (programmatic use, tests): ``config_for(["a.tar"], "out", seed=1)``."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    argv = [*inputs, "--out", out]
    for key, value in settings.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            argv += [flag] if value else []
        else:
            argv += [flag, ",".join(value) if isinstance(value, (list, tuple)) else str(value)]
    return config_from_args(parser.parse_args(argv))

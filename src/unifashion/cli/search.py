"""``unifashion index``, ``search`` and ``serve``: the catalogue index, queries over it, the HTTP service."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from unifashion.cli.common import MODEL_HELP, add_device_flags, load_model, reports_errors
from unifashion.settings import GENERATION, MAX_GENERATION_STEPS


def _milvus_backend(args: argparse.Namespace, creating: bool = False):
    """The Milvus backend the options name, or None: the local index (``--backend faiss``), or,
    when opening, whatever the index folder records."""
    from unifashion.index import MilvusBackend

    if creating:
        if args.backend != "milvus":
            if args.milvus_uri or args.milvus_collection:
                raise ValueError("--milvus-uri / --milvus-collection need --backend milvus")
            return None
    elif not (args.milvus_uri or args.milvus_collection):
        return None  # the folder's backend.json says where a Milvus-backed index lives
    recorded = {}
    if Path(args.index, "backend.json").is_file():
        recorded = MilvusBackend.from_file(Path(args.index)).to_file()
    options = {"uri": args.milvus_uri or recorded.get("uri"),
               "collection": args.milvus_collection or recorded.get("collection") or "unifashion"}
    index_type = getattr(args, "milvus_index_type", None) or recorded.get("index_type")
    if index_type:
        options["index_type"] = index_type
    return MilvusBackend(**options)


def _add_milvus_options(parser: argparse.ArgumentParser, creating: bool = False, writes: bool = True) -> None:
    uri_kinds = "a milvus-lite file (*.db) or a cluster's http://host:19530 (token: $UNIFASHION_MILVUS_TOKEN)"
    if creating:
        uri_help = f"the Milvus to store a new index in: {uri_kinds}; default: INDEX/milvus.db (milvus-lite)"
    else:
        uri_help = f"the Milvus the index lives in, {uri_kinds} (default: what INDEX/backend.json records)"
    parser.add_argument("--milvus-uri", help=uri_help)
    parser.add_argument("--milvus-collection", help="prefix of the index's Milvus collections (default unifashion)")
    if writes:
        parser.add_argument("--milvus-break-lock", action="store_true",
                            help="take the Milvus index's write lock from a writer that died on another host")


@reports_errors
def _cmd_index(args: argparse.Namespace) -> int:
    from unifashion.pipelines import build_index

    report = build_index(load_model(args.model), args.catalogue, args.index, split=args.split,
                         batch_size=args.batch_size, progress=not args.no_progress, ann=args.ann,
                         captions=not args.no_captions,
                         embeddings=args.embeddings, break_lock=args.milvus_break_lock,
                         backend=_milvus_backend(args, creating=not _index_exists(args.index)))
    print(report)
    return 0


@reports_errors
def _cmd_embed(args: argparse.Namespace) -> int:
    from unifashion.pipelines import CatalogueBuilder, embed_catalogue
    from unifashion.training.trainer import make_accelerator

    # Under `accelerate launch` each process embeds its share of the shards, on its own device.
    accelerator = make_accelerator(args.device or "auto", args.precision or "no")
    model = load_model(args.model).to(accelerator.device)
    builder = CatalogueBuilder(model, batch_size=args.batch_size, progress=not args.no_progress,
                               captions=not args.no_captions)
    with accelerator.autocast():
        report = embed_catalogue(builder, args.catalogue, args.out, split=args.split, shard_size=args.shard_size,
                                 rank=accelerator.process_index, world_size=accelerator.num_processes,
                                 progress=not args.no_progress)
    print(report)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        print(f"next: unifashion index --catalogue {args.catalogue} --embeddings {args.out} --index DIR"
              + (f" --split {args.split}" if args.split else "") + (" --no-captions" if args.no_captions else ""))
    return 0


def _index_exists(folder: str) -> bool:
    from unifashion.index import index_exists

    return index_exists(folder)


@reports_errors
def _cmd_search(args: argparse.Namespace) -> int:
    from unifashion.data.records import load_image
    from unifashion.experiments.demo import hit_lines
    from unifashion.pipelines import SearchPipeline

    if args.query and args.text:
        raise ValueError("give the text once: as the argument or with --text")
    text = args.query or args.text
    if text is None and args.image is None:
        raise ValueError("give a text (text -> images), --image (image -> texts) or both (composed search)")
    image = load_image(args.image) if args.image else None
    with SearchPipeline.open(load_model(args.model), args.index, read_only=True,
                             backend=_milvus_backend(args)) as pipeline:
        if image is None:
            hits = pipeline.text_to_images(text, args.top_k, category=args.category)
            query = {"task": "text_to_images", "text": text}
        elif text is None:
            text_hits = pipeline.image_to_texts(image, args.top_k)
            if args.json:
                print(json.dumps({"query": {"task": "image_to_texts", "image": args.image},
                                  "results": [h.to_dict() for h in text_hits]}, indent=2))
            for hit in [] if args.json else text_hits:
                shown = ", ".join(f"{s.item_id} ({s.style})" for s in hit.sources[:3])
                more = f" +{len(hit.sources) - 3} more" if len(hit.sources) > 3 else ""
                print(f"{hit.rank:3d}. score {hit.score:.4f}  {hit.text}  <- {shown}{more}")
            return 0
        else:
            hits = pipeline.composed(image, text, args.top_k, fusion=not args.no_fusion, category=args.category)
            query = {"task": "composed", "image": args.image, "text": text,
                     "fusion": pipeline.uses_fusion(not args.no_fusion)}
    if args.json:
        print(json.dumps({"query": query, "results": [h.to_dict() for h in hits]}, indent=2))
    else:
        for line in hit_lines(hits):
            print(line)
    return 0


@reports_errors
def _cmd_serve(args: argparse.Namespace) -> int:
    import os

    from unifashion.serving.app import ServiceSettings, serve

    hosts = {"allowed_hosts": tuple(args.allowed_host)} if args.allowed_host else {}
    settings = ServiceSettings(max_upload_bytes=int(args.max_upload_mb * 2**20), max_top_k=args.max_top_k,
                               max_generation_steps=args.max_steps,
                               default_generation_steps=min(GENERATION.steps, args.max_steps),
                               max_waiting_images=args.max_waiting, queue_timeout_s=args.queue_timeout,
                               max_connections=args.max_connections, allowed_origins=tuple(args.allowed_origin),
                               **hosts)
    backend = _milvus_backend(args)
    if backend is None and not _index_exists(args.index):
        raise FileNotFoundError(f"no catalogue index at {args.index}; build one with `unifashion index`")
    serve(args.index, args.model, host=args.host, port=args.port,
          api_key=args.api_key or os.environ.get("UNIFASHION_API_KEY") or None, threads=args.threads,
          read_only=args.read_only, settings=settings, backend=backend, break_lock=args.milvus_break_lock)
    return 0


def register(sub) -> None:
    ix = sub.add_parser("index", help="embed a catalogue into a search index (resumable: re-run to continue "
                                      "or to add new items)")
    ix.add_argument("--catalogue", required=True,
                    help="an embedded catalogue folder, or an image folder with metadata.jsonl / metadata.csv "
                         "(id, path, category, caption...), or such a file")
    ix.add_argument("--split", help="only this split of an embedded catalogue (train, val, test)")
    ix.add_argument("--index", required=True, help="index folder (created, or added to)")
    ix.add_argument("--model", default="tiny-default", help=MODEL_HELP)
    ix.add_argument("--batch-size", type=int, default=32)
    ix.add_argument("--ann", default="vectors", choices=["vectors"],
                    help="candidate stage of a new index: vectors (every item vector, grouped by item)")
    ix.add_argument("--backend", default="faiss", choices=["faiss", "milvus"],
                    help="where a new index lives: faiss (files in the index folder) or milvus (grouping search "
                         "in Milvus; the folder records where)")
    _add_milvus_options(ix, creating=True)
    ix.add_argument("--milvus-index-type", help="Milvus vector index of a new index (default HNSW; FLAT is exact)")
    ix.add_argument("--no-progress", action="store_true", help="no progress bar")
    ix.add_argument("--embeddings", help="store the vectors `unifashion embed` wrote to this folder for the same "
                    "--catalogue (and --split, --no-captions) instead of running the model on the images")
    ix.add_argument("--no-captions", action="store_true",
                    help="index without generated captions (no caption fusion in composed search): much faster")
    ix.set_defaults(func=_cmd_index)

    em = sub.add_parser("embed", help="embed a large catalogue ahead of `index`, in resumable shards; under "
                                      "`accelerate launch` the processes share the shards")
    em.add_argument("--catalogue", required=True, help="as `unifashion index --catalogue`")
    em.add_argument("--split", help="only this split of an embedded catalogue (train, val, test)")
    em.add_argument("--out", required=True, help="embeddings folder (created, or resumed)")
    em.add_argument("--model", default="tiny-default", help=MODEL_HELP)
    em.add_argument("--batch-size", type=int, default=32)
    em.add_argument("--shard-size", type=int, default=2048, help="items per shard file (the unit of resuming)")
    em.add_argument("--no-captions", action="store_true", help="Z only: for an index built with --no-captions")
    em.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_device_flags(em, workers=False)
    em.set_defaults(func=_cmd_embed)

    se = sub.add_parser("search", help="search an index: TEXT -> images; --image -> catalogue texts; "
                                       "--image with TEXT -> images (composed, with caption fusion)")
    se.add_argument("query", nargs="?", help="the text (or use --text)")
    se.add_argument("--text", help="the text: a description, or with --image the modification")
    se.add_argument("--image", help="query image (alone: image -> texts; with a text: composed search)")
    se.add_argument("--index", required=True)
    se.add_argument("--model", default="tiny-default", help=MODEL_HELP)
    se.add_argument("--top-k", type=int, default=10)
    se.add_argument("--category", help="only items of this category")
    se.add_argument("--no-fusion", action="store_true", help="composed search without caption fusion")
    se.add_argument("--json", action="store_true", help="print the results as JSON")
    _add_milvus_options(se, writes=False)
    se.set_defaults(func=_cmd_search)

    sv = sub.add_parser("serve", help="HTTP service and web page over an index (FastAPI + uvicorn)")
    sv.add_argument("--index", required=True)
    sv.add_argument("--model", default="tiny-default", help=MODEL_HELP)
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--api-key", help="key that adding/deleting items requires (default: $UNIFASHION_API_KEY)")
    sv.add_argument("--threads", type=int, default=1, help="torch threads (the model runs one request at a time)")
    sv.add_argument("--read-only", action="store_true", help="open the index read-only (no adding/deleting)")
    sv.add_argument("--max-upload-mb", type=float, default=10.0)
    sv.add_argument("--max-top-k", type=int, default=100)
    sv.add_argument("--max-steps", type=int, default=MAX_GENERATION_STEPS, help="cap on generation steps per request")
    sv.add_argument("--max-waiting", type=int, default=8,
                    help="requests with images that may wait for the model; more get 503 + Retry-After")
    sv.add_argument("--queue-timeout", type=float, default=30.0,
                    help="seconds a request may wait for the model before it gets 503")
    sv.add_argument("--max-connections", type=int, default=100, help="open connections; more get 503")
    sv.add_argument("--allowed-host", action="append", default=[],
                    help="a Host name to answer to (repeatable; '*' for any). Default: the loopback names, "
                         "plus the bound address when it is not loopback")
    sv.add_argument("--allowed-origin", action="append", default=[],
                    help="a site (scheme://host[:port]) whose pages may POST to the service (repeatable)")
    _add_milvus_options(sv)
    sv.set_defaults(func=_cmd_serve)

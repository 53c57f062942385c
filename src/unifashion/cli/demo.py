"""``unifashion demo``: the README's main job (:func:`unifashion.experiments.demo.run_demo`), then
the web page over its index when run from a terminal."""

from __future__ import annotations

import argparse
import sys

from unifashion.evaluation.tasks import TASKS

PORT = 8000


def _cmd_demo(args: argparse.Namespace) -> int:
    from unifashion.experiments.demo import DemoConfig, run_demo, serve_command

    result = run_demo(DemoConfig(output=args.output, n_items=args.n_items, seed=args.seed, workers=args.workers,
                                 catalogue_only=args.catalogue_only, no_train=args.no_train,
                                 eval_tasks=tuple(args.eval_tasks), fig_max_items=args.fig_items))
    if result.index is None:
        return 0
    if args.no_serve or not sys.stdin.isatty():
        print(f"      the web page: run `{serve_command(result, PORT)}` and open http://127.0.0.1:{PORT}/")
        return 0
    from unifashion.serving.app import serve

    print(f"      serving the web page at http://127.0.0.1:{PORT}/ (Ctrl-C to stop)")
    serve(str(result.index), result.model, port=PORT)
    return 0


def register(sub) -> None:
    demo = sub.add_parser("demo", help="the main job on the embedded default: catalogue, the shipped default model, "
                                       "evaluation with baselines, pictures, search")
    demo.add_argument("--output", default="outputs/demo", help="folder for everything the demo writes")
    demo.add_argument("--n-items", type=int, default=2000)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--workers", type=int, default=2)
    demo.add_argument("--catalogue-only", action="store_true", help="stop after the catalogue and its picture")
    demo.add_argument("--no-train", action="store_true", help="never train: skip what is not trained yet")
    demo.add_argument("--no-serve", action="store_true", help="do not serve the web page at the end (it is "
                                                               "served only when run from a terminal)")
    demo.add_argument("--eval-tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    demo.add_argument("--fig-items", type=int, default=16,
                      help="text-to-image prompts evaluated (the full protocol, in the results file, uses 64)")
    demo.set_defaults(func=_cmd_demo)

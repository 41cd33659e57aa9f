"""The ``bsviz`` command line: each subcommand parses its arguments and calls the library."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import warnings
from pathlib import Path

import numpy as np

from bsviz.rig.rig import load_npz, load_rig, save_npz

# A sample expression for the demo: a broad smile with raised cheeks and brows.
DEMO_EXPRESSION = {"mouthSmile_L": 0.9, "mouthSmile_R": 0.9, "cheekSquint_L": 0.6,
                   "cheekSquint_R": 0.6, "jawOpen": 0.25, "browInnerUp_L": 0.3,
                   "browInnerUp_R": 0.3, "eyeSquint_L": 0.3, "eyeSquint_R": 0.3}


class CliError(ValueError):
    """A bad command-line value (reported as one line, exit status 2)."""


def parse_weights(settings: list[str], weights_file: str | None) -> dict[str, float]:
    """``{name: value}`` from a JSON file and ``name=value`` settings (settings win)."""
    weights: dict[str, float] = {}
    if weights_file:
        path = Path(weights_file)
        try:
            loaded = json.loads(path.read_text())
        except OSError as e:
            raise CliError(f"cannot read weights file {path}: {e.strerror or e}") from None
        except ValueError as e:
            raise CliError(f"weights file {path} is not valid JSON: {e}") from None
        if not isinstance(loaded, dict) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in loaded.values()):
            raise CliError(f"weights file {path} must hold one JSON object of name: number")
        weights.update({str(k): float(v) for k, v in loaded.items()})
    for setting in settings:
        name, sep, value = setting.partition("=")
        try:
            if not sep:
                raise ValueError
            weights[name.strip()] = float(value)
        except ValueError:
            raise CliError(f"--set expects NAME=NUMBER, got '{setting}'") from None
    return weights


def _split_identity(rig, weights: dict[str, float]):
    """Expression and identity weights from one ``{name: value}`` dict (identity may be None)."""
    identity = {k: v for k, v in weights.items() if k in rig.identity_names}
    expression = {k: v for k, v in weights.items() if k not in identity}
    return expression, (identity or None)


def _face(args):
    from bsviz.rig.blend import blend

    rig = _rig(args)
    expression, identity = _split_identity(rig, parse_weights(args.set, args.weights))
    return rig, blend(rig, expression, identity, extrapolate=args.extrapolate)


def _rig(args):
    return load_rig(args.rig, neutral=getattr(args, "neutral", None))


def cmd_blend(args) -> None:
    from bsviz.rig.colours import face_colours
    from bsviz.rig.export import save_mesh

    rig, vertices = _face(args)
    colours = face_colours(rig, vertices, args.heatmap)
    path = save_mesh(args.out, vertices, rig.visible_triangles(), colours)
    print(f"wrote {path} ({rig.n_vertices} vertices)")


def cmd_render(args) -> None:
    from bsviz.files import check_writable
    from bsviz.rig.colours import face_colours
    from bsviz.rig.render import VIEWS, Renderer, image_format, save_png

    out = Path(args.out)
    views = list(VIEWS) if args.view == "all" else [args.view]
    paths = {view: out if len(views) == 1 else out.with_name(f"{out.stem}_{view}{out.suffix}")
             for view in views}
    for path in paths.values():  # refused before any work: an unknown format, an unwritable path
        image_format(path)
        check_writable(path)
    rig, vertices = _face(args)
    colours = face_colours(rig, vertices, args.heatmap) if args.heatmap else None
    with Renderer(rig, size=args.size) as renderer:
        for view, path in paths.items():
            save_png(path, renderer.render(vertices, view, colours))
            print(f"wrote {path}")


def cmd_rig_info(args) -> None:
    rig = _rig(args)
    print(f"rig: {rig.source}")
    print(f"vertices: {rig.n_vertices}  triangles: {len(rig.triangles)}  "
          f"(drawn: {len(rig.visible_triangles())})")
    print(f"groups ({len(rig.group_names)}): {', '.join(rig.group_names)}")
    print(f"expression shapes ({rig.n_shapes}): {', '.join(rig.names)}")
    print(f"identity shapes ({len(rig.identity_names)}): {', '.join(rig.identity_names) or '-'}")
    if args.check:
        from bsviz.rig.rig import mesh_report

        for key, value in mesh_report(rig.neutral, rig.triangles).items():
            print(f"  {key}: {value}")


def cmd_rig_convert(args) -> None:
    source = Path(args.source)
    if source.suffix == ".npz" and args.triangles_from:
        rig = load_npz(source, triangles_from=args.triangles_from)
    else:
        rig = load_rig(source, neutral=args.neutral)
    save_npz(rig, args.out)
    print(f"wrote {args.out}: {rig.n_shapes} expression and {len(rig.identity_names)} "
          f"identity shapes on {rig.n_vertices} vertices")


def cmd_rig_glb(args) -> None:
    from bsviz.rig.blend import weight_vector
    from bsviz.rig.colours import vertex_colours
    from bsviz.rig.export import save_rig_glb

    rig = _rig(args)
    animation = None
    if args.animation:
        try:
            frames = json.loads(Path(args.animation).read_text())
        except (OSError, ValueError) as e:
            raise CliError(f"cannot read animation {args.animation}: {e}") from None
        if not isinstance(frames, list) or not frames or not all(isinstance(f, dict) for f in frames):
            raise CliError(f"animation {args.animation} must be a JSON list of {{name: value}} frames")
        animation = np.stack([weight_vector(f, rig.names) for f in frames])
    path = save_rig_glb(args.out, rig, animation=animation, fps=args.fps,
                        colours=vertex_colours(rig))
    print(f"wrote {path}: {rig.n_shapes} morph targets"
          + (f", {len(animation)} animation frames" if animation is not None else ""))


def cmd_demo(args) -> None:
    """Render the shipped rig with a sample expression; write a mesh and an animated rig GLB."""
    from bsviz.rig.blend import blend, weight_vector
    from bsviz.rig.colours import vertex_colours
    from bsviz.rig.export import save_mesh, save_rig_glb
    from bsviz.rig.render import VIEWS, Renderer, save_png

    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rig = load_rig()
    vertices = blend(rig, DEMO_EXPRESSION)
    with Renderer(rig, size=512) as renderer:
        for view in VIEWS:
            save_png(out / f"demo_{view}.png", renderer.render(vertices, view))
    save_mesh(out / "demo_face.glb", vertices, rig.visible_triangles(), vertex_colours(rig))
    peak = weight_vector(DEMO_EXPRESSION, rig.names)
    ramp = np.sin(np.linspace(0, math.pi, 60))[:, None].astype(np.float32)  # 0 -> 1 -> 0, 2 s
    save_rig_glb(out / "demo_rig_animated.glb", rig, animation=ramp * peak, fps=30,
                 colours=vertex_colours(rig))
    for name in sorted(p.name for p in out.glob("demo_*")):
        print(f"wrote {out / name}")


def cmd_label(args) -> None:
    from bsviz.fer.labels import class_means, label_dataset, sidecar_path, top_table
    from bsviz.files import atomic_path, check_writable

    if args.presets:
        check_writable(args.presets)  # before the work, not after it
    try:
        labels = label_dataset(args.data_dir, args.out, workers=args.workers,
                               progress=not args.quiet)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM
        kept = sidecar_path(args.out)
        print("bsviz: interrupted" + (f"; the images labelled so far are kept in {kept}: run "
                                      "the same command again to go on" if kept.exists() else ""),
              file=sys.stderr)
        raise SystemExit(130) from None
    summary = json.loads(Path(args.out).with_suffix(".json").read_text())
    found = summary["found_by"]
    print(f"wrote {args.out}: {int(labels.detected.sum())} of {len(labels.paths)} images "
          f"with landmarks and scores ({labels.detected.mean():.1%}), "
          f"{found['detector']} more faces found by the detector and {found['whole image']} "
          f"small images taken whole as their face crop; {summary['labelled_now']} labelled "
          "in this run, the rest cached")
    if summary["unreadable"]:
        first = summary["unreadable_first"]
        print(f"skipped {summary['unreadable']} unreadable files (counted as without a face): "
              + "; ".join(f"{path} ({why})" for path, why in first.items())
              + ("; ..." if summary["unreadable"] > len(first) else ""))
    means = class_means(labels)
    print(top_table(means, labels.names))
    if args.presets:
        presets = {c: {n: round(float(v), 4) for n, v in zip(labels.names, mean)}
                   for c, mean in means.items()}
        with atomic_path(args.presets) as tmp:
            tmp.write_text(json.dumps(presets, indent=1))
        print(f"wrote {args.presets}: per-class mean weights as expression presets")


def cmd_synth(args) -> None:
    from bsviz.fer.synth import render_synthetic

    synth = render_synthetic(args.n, args.out, seed=args.seed, label_files=args.labels)
    summary = json.loads((Path(args.out) / "synth.json").read_text())
    crop = summary["mediapipe_crop"]
    print(f"wrote {Path(args.out) / 'synth.npz'}: {len(synth.weights)} of {summary['requested']} "
          f"faces kept, {summary['renders_per_s']:.1f} renders/s; MediaPipe vs exact weights "
          f"on the crops: MAE {crop['mae']:.3f} (constant guess {crop['baseline_mae']:.3f})")


def train_config(args, fixed: tuple[str, ...] = ()):
    """A TrainConfig from ``--config FILE.json`` and any per-field flags (flags win); the
    ``fixed`` fields are the command's to set, and refused in the file."""
    from dataclasses import fields

    from bsviz.fer.config import TrainConfig

    values: dict = {}
    if args.config:
        try:
            values = json.loads(Path(args.config).read_text())
        except (OSError, ValueError) as e:
            raise CliError(f"cannot read config {args.config}: {e}") from None
        unknown = set(values) - {f.name for f in fields(TrainConfig)}
        if unknown:
            raise CliError(f"unknown config keys in {args.config}: {', '.join(sorted(unknown))}")
        taken = sorted(set(values) & set(fixed))
        if taken:
            raise CliError(f"{args.config} sets {', '.join(taken)}, which this command sets itself")
    values.update({f.name: getattr(args, f.name) for f in fields(TrainConfig)
                   if getattr(args, f.name, None) is not None})
    return TrainConfig(**values)


def _add_config_flags(p: argparse.ArgumentParser, fixed: tuple[str, ...] = ()) -> None:
    """One flag per TrainConfig field (``--epochs 30``, ``--widths 32,64,...``), but for the
    ``fixed`` ones, which the command sets itself."""
    from dataclasses import MISSING, fields

    from bsviz.fer.config import TrainConfig

    def parse_bool(text: str) -> bool:
        if text.lower() not in ("1", "0", "true", "false", "yes", "no"):
            raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
        return text.lower() in ("1", "true", "yes")

    def parse_ints(text: str) -> tuple[int, ...]:
        return tuple(int(x) for x in text.split(","))

    for f in fields(TrainConfig):
        if f.name in fixed:
            continue
        kind = str(f.type)
        convert = (parse_bool if "bool" in kind else parse_ints if "tuple" in kind
                   else int if kind.startswith("int") else float if kind.startswith("float")
                   else str)
        default = f.default if f.default is not MISSING else None
        p.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=convert,
                       default=None, help=f"(default: {default})")


def cmd_train(args) -> None:
    from bsviz.fer.train import train

    result = train(train_config(args))
    if "test_accuracy" in result or "test_mae" in result:
        shown = {k: result[k] for k in ("best_epoch", "test_accuracy", "test_mae", "n_test")
                 if result.get(k) is not None}
        print(json.dumps(shown))


def image_paths(sources: list[str]) -> list[Path]:
    """The images named: files as given, folders as the image files under them, sorted."""
    from bsviz.fer.data import IMAGE_SUFFIXES

    paths: list[Path] = []
    for source in map(Path, sources):
        if source.is_dir():
            found = sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
                           and p.is_file())
            if not found:
                raise CliError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder {source}")
            paths += found
        else:
            paths.append(source)
    return paths


def cmd_predict(args) -> int:
    """Every face in every image: one JSON line per image with --json, else a few lines each.
    Exit status 1 if any image could not be used (the others are still printed)."""
    from tqdm import tqdm

    from bsviz.fer.predict import Predictor

    paths = image_paths(args.images)
    if args.mesh and len(paths) != 1:
        raise CliError(f"--mesh writes one face: give one image, not {len(paths)}")
    failed = 0
    with Predictor(args.model, flip=args.flip) as predictor, \
            tqdm(paths, desc="predict", unit="image", file=sys.stderr,
                 disable=len(paths) < 10, leave=False) as bar:
        for path, predictions in zip(bar, predictor.predict_many(paths)):
            if isinstance(predictions, Exception):
                e, predictions = predictions, []
                failed += 1
                bar.write(json.dumps({"path": str(path), "error": str(e)}) if args.json
                          else f"{path}: error: {e}", file=sys.stdout)
                continue
            record = {"path": str(path), "faces": [p.as_dict() for p in predictions]}
            bar.write(json.dumps(record) if args.json else _describe(path, predictions),
                      file=sys.stdout)
    if args.mesh and predictions:
        _write_face(args, predictions[0])
    elif args.mesh:
        raise CliError(f"no face found in {paths[0]}; --mesh wrote nothing")
    return 1 if failed else 0


def _describe(path: Path, predictions: list) -> str:
    """Plain text: the image, then per face its box, expression, probabilities, top weights."""
    lines = [f"{path}: {len(predictions)} face{'s' * (len(predictions) != 1)}"]
    for i, p in enumerate(predictions, 1):
        x0, y0, x1, y1 = np.round(p.face.box).astype(int).tolist()
        note = {"landmarker": "", "detector": " (no landmarks: classified from the detector's "
                "box, no MediaPipe scores)", "whole image": " (no face found: the whole small "
                "image is taken as the face crop)"}[p.face.found_by]
        lines.append(f"  face {i} at ({x0}, {y0})-({x1}, {y1}): {p.expression}{note}")
        ranked = np.argsort(-p.probabilities)
        lines.append("    " + "  ".join(f"{p.classes[k]} {p.probabilities[k]:.3f}" for k in ranked))
        if p.weights is not None:
            top = np.argsort(-p.weights)[:8]
            lines.append("    top weights: " + ", ".join(
                f"{p.shape_names[k]} {p.weights[k]:.2f}" for k in top))
        if p.fit is not None:
            pose = ", ".join(f"{k} {v:+.1f}" for k, v in p.fit.pose.items())
            top = np.argsort(-p.fit.weights)[:5]
            lines.append(f"    head pose (degrees): {pose}; rig fitted to the landmarks: NME "
                         f"{p.fit.nme:.3f}, " + ", ".join(
                             f"{p.shape_names[k]} {p.fit.weights[k]:.2f}" for k in top))
    return "\n".join(lines)


def _write_face(args, prediction) -> None:
    """The reconstructed face of ``prediction`` as a mesh file (--mesh), on ``--rig``."""
    from bsviz.rig.blend import blend
    from bsviz.rig.colours import vertex_colours
    from bsviz.rig.export import save_mesh

    if prediction.weights is None:
        raise CliError("this model regresses no blendshape weights; --mesh needs them")
    rig = _rig(args)
    save_mesh(args.mesh, blend(rig, dict(zip(prediction.shape_names, prediction.weights))),
              rig.visible_triangles(), vertex_colours(rig))
    print(f"wrote {args.mesh}", file=sys.stderr if args.json else sys.stdout)


# TrainConfig fields each experiment sets itself (per run), so `bsviz eval` offers no flag for them.
FER_FIXED = ("kind", "dataset", "seed", "fold", "n_folds", "resume", "init_image",
             "init_blendshape")
CK_FIXED = ("kind", "dataset", "fold", "resume", "init_image", "init_blendshape")
RECORDS_HELP = ("a folder (e.g. results/runs/fer2013, committed) for each finished run's result; "
                "runs whose result is there are not trained again")


def cmd_eval(args) -> None:
    """Run one of the paper's experiments (resuming finished runs) and print its summary."""
    from bsviz.fer import experiments, reports

    if args.experiment == "reference":
        summary = experiments.blendshape_reference(
            args.data_dir, args.ck_labels, args.fer_labels, args.regressor)
        _write_json(Path(args.out_dir) / "reference.json", summary)
        print(json.dumps(summary, indent=1))
        return
    if args.experiment == "table":
        reference = json.loads(Path(args.reference).read_text()) if args.reference else None
        print(reports.results_table([json.loads(Path(f).read_text()) for f in args.summaries],
                                    reference))
        return
    if args.experiment == "synthetic":
        summary = {model: experiments.synthetic_mae(model, args.synth) for model in args.models}
        _write_json(args.out, summary)
        print(json.dumps(summary, indent=1))
        return
    if args.experiment == "fer2013":
        summary = experiments.fer2013_experiment(train_config(args, FER_FIXED), args.seeds,
                                                 args.fusion_epochs, args.records)
    else:
        cfg = train_config(args, CK_FIXED)
        summary = experiments.ck_experiment(cfg, args.init_image, args.init_blendshape,
                                            args.folds, args.records, tuple(args.networks))
    print(reports.format_summary(summary))


def _write_json(path: str | Path, value) -> None:
    """``value`` as indented JSON at ``path`` (written atomically, its folder made)."""
    from bsviz.files import write_bytes_atomic

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, json.dumps(value, indent=2).encode())


def parse_auth(values: list[str], auth_file: str | None) -> list[tuple[str, str]]:
    """(user, password) pairs from ``--auth USER:PASSWORD`` values and an ``--auth-file`` of
    one ``user:password`` a line (blank lines skipped, spaces around a line ignored)."""
    pairs = [_credential(v, "--auth expects USER:PASSWORD, neither empty") for v in values]
    if auth_file:
        path = Path(auth_file)
        try:
            lines = path.read_text().splitlines()
        except OSError as e:
            raise CliError(f"cannot read auth file {path}: {e.strerror or e}") from None
        except UnicodeDecodeError:
            raise CliError(f"auth file {path} is not text") from None
        found = [_credential(line.strip(), f"auth file {path}, line {n}: expected "
                             "user:password, neither empty")
                 for n, line in enumerate(lines, 1) if line.strip()]
        if not found:
            raise CliError(f"auth file {path} holds no user:password line")
        pairs += found
    return pairs


def _credential(text: str, error: str) -> tuple[str, str]:
    """``user:password`` as a pair (the password may hold colons); CliError(error) if not
    (the text is not repeated: it may be a password)."""
    user, sep, password = text.partition(":")
    if not (sep and user.strip() and password):
        raise CliError(error)
    return user.strip(), password


def exposure_warning(host: str, share: bool, auth: list[tuple[str, str]]) -> str | None:
    """The warning for an app that others can reach without a password; None when it is
    served on a loopback address only, or with ``auth``."""
    import ipaddress

    if auth:
        return None
    if share:
        return "--share without --auth: anyone with the public link can use the app"
    try:
        local = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name
        local = False
    if local:
        return None
    return (f"the app listens on {host} without --auth: anyone who can reach this machine "
            "can use it (add --auth USER:PASSWORD or --auth-file FILE)")


def cmd_ship(args) -> None:
    """Pack the best run by validation accuracy as a release model, with its card."""
    from bsviz.fer.experiments import ship_best

    print(json.dumps(ship_best(args.runs, args.out), indent=1))


def cmd_app(args) -> None:
    auth = parse_auth(args.auth, args.auth_file)
    warning = exposure_warning(args.host, args.share, auth)
    if warning:
        print(f"bsviz: warning: {warning}", file=sys.stderr)
    from bsviz.ui.app import launch  # imported here: Gradio takes seconds to import

    launch(args.host, args.port, args.share, args.model, auth=auth or None)


def _add_weight_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="a shape weight, e.g. --set jawOpen=1 (repeatable; identity names too)")
    p.add_argument("--weights", metavar="FILE.json", help="a JSON object {name: value}")
    p.add_argument("--extrapolate", action="store_true",
                   help="keep expression weights outside [0, 1] instead of clamping them")
    p.add_argument("--heatmap", action="store_true",
                   help="colour by displacement |T - b0| instead of the rig's colours")


def _add_rig_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rig", help="an .npz rig or a folder of OBJ files (default: the shipped ICT rig)")
    p.add_argument("--neutral", help="with an OBJ folder and no manifest.json: the neutral mesh file")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bsviz", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("blend", help="write the mesh for a set of weights (.obj, .ply, .glb)")
    _add_rig_arg(p)
    _add_weight_args(p)
    p.add_argument("--out", required=True, help="output mesh: face.obj, face.ply or face.glb")
    p.set_defaults(func=cmd_blend)

    p = sub.add_parser("render", help="render the face for a set of weights to an image")
    _add_rig_arg(p)
    _add_weight_args(p)
    p.add_argument("--view", default="front", choices=["front", "three_quarter", "profile", "all"])
    p.add_argument("--size", type=int, default=512, help="image width and height in pixels")
    p.add_argument("--out", required=True,
                   help="output image: .png, .jpg or .webp (with --view all: one per view)")
    p.set_defaults(func=cmd_render)

    rig = sub.add_parser("rig", help="inspect, convert or export a rig").add_subparsers(
        dest="rig_command", required=True)
    p = rig.add_parser("info", help="print the shape names and counts")
    _add_rig_arg(p)
    p.add_argument("--check", action="store_true", help="also run open3d topology checks")
    p.set_defaults(func=cmd_rig_info)
    p = rig.add_parser("convert", help="save any rig (npz or OBJ folder) as a compact .npz")
    p.add_argument("source", help="an .npz rig or a folder of OBJ files")
    p.add_argument("out", help="output .npz")
    p.add_argument("--neutral", help="the neutral OBJ in a folder without manifest.json")
    p.add_argument("--triangles-from", help="an OBJ giving its triangles to an .npz that has none")
    p.set_defaults(func=cmd_rig_convert)
    p = rig.add_parser("glb", help="export the rig as a GLB with named morph targets")
    _add_rig_arg(p)
    p.add_argument("--animation", metavar="FILE.json", help="a JSON list of {name: value} frames")
    p.add_argument("--fps", type=float, default=30.0)
    p.add_argument("--out", required=True, help="output .glb")
    p.set_defaults(func=cmd_rig_glb)

    p = sub.add_parser("label", help="MediaPipe blendshape pseudo-labels for a dataset folder")
    p.add_argument("--data-dir", required=True, help="a folder of class folders of images")
    p.add_argument("--out", required=True, help="output .npz (a .json summary goes beside it)")
    p.add_argument("--workers", type=int, default=2, help="processes (default 2)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--presets", metavar="FILE.json",
                   help="also write the per-class mean weights as {class: {name: value}}")
    p.set_defaults(func=cmd_label)

    p = sub.add_parser("synth", help="render the rig with random weights: faces with exact labels")
    p.add_argument("--n", type=int, required=True, help="how many faces")
    p.add_argument("--out", required=True, help="output folder (synth.npz, synth.json)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--labels", nargs="*", metavar="FILE.npz",
                   default=["runs/labels/ck+48.npz", "runs/labels/fer2013.npz"],
                   help="label files whose class means centre the weight prior (default: "
                        "runs/labels/ck+48.npz runs/labels/fer2013.npz; none: a sparse prior)")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("train", help="train a stream or the two-stream network")
    p.add_argument("--config", help="a JSON file of TrainConfig fields (flags override it)")
    _add_config_flags(p)
    p.set_defaults(func=cmd_train)

    experiment = sub.add_parser("eval", help="the paper's experiments: fer2013, ck+ or reference"
                                ).add_subparsers(dest="experiment", required=True)
    p = experiment.add_parser("fer2013", help="image, blendshape and two-stream networks per seed")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--fusion-epochs", type=int, default=10, help="two-stream epochs")
    p.add_argument("--records", help=RECORDS_HELP)
    p.add_argument("--config", help="a JSON file of TrainConfig fields (flags override it)")
    _add_config_flags(p, FER_FIXED)
    p.set_defaults(func=cmd_eval)
    p = experiment.add_parser("ck+", help="image and two-stream networks per subject-independent "
                                          "fold, started from FER2013 streams")
    p.add_argument("--folds", type=int, nargs="+", help="folds (default: all)")
    p.add_argument("--networks", nargs="+", choices=("image", "two_stream"),
                   default=["image", "two_stream"], help="the networks trained per fold")
    p.add_argument("--records", help=RECORDS_HELP)
    p.add_argument("--config", help="a JSON file of TrainConfig fields (flags override it)")
    _add_config_flags(p, CK_FIXED)
    for stream in ("image", "blendshape"):
        p.add_argument(f"--init-{stream}", required=True,
                       help=f"a FER2013 checkpoint whose {stream} stream starts each fold")
    p.set_defaults(func=cmd_eval)
    p = experiment.add_parser("reference", help="logistic regression on blendshapes alone")
    p.add_argument("--data-dir", required=True, help="the folder holding fer2013/ and ck+48/")
    p.add_argument("--ck-labels", default="runs/labels/ck+48.npz", help="CK+ labels")
    p.add_argument("--fer-labels", default="runs/labels/fer2013.npz", help="FER2013 labels")
    p.add_argument("--regressor", help="a checkpoint whose blendshape stream to use as well")
    p.add_argument("--out-dir", default="runs/reference", help="where reference.json goes")
    p.set_defaults(func=cmd_eval)
    p = experiment.add_parser("table", help="the README's results table (Markdown) from "
                                            "experiment summaries")
    p.add_argument("summaries", nargs="+", help="summary JSON files (bsviz eval fer2013 / ck+)")
    p.add_argument("--reference", help="reference.json of bsviz eval reference")
    p.set_defaults(func=cmd_eval)
    p = experiment.add_parser("synthetic", help="weight error of blendshape streams against the "
                                                "exact weights of synthetic renders")
    p.add_argument("models", nargs="+", help="checkpoints with a blendshape stream")
    p.add_argument("--synth", default="runs/synth/synth.npz", help="renders (bsviz synth)")
    p.add_argument("--out", default="runs/reference/synthetic_mae.json",
                   help="where the errors go (JSON, one entry per checkpoint)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("ship", help="pack the run with the best validation accuracy as a "
                                    "release model (float16, with its card)")
    p.add_argument("runs", nargs="+", help="run folders (best.pt, result.json), e.g. "
                                           "runs/fer2013/two_stream/seed*")
    p.add_argument("--out", default="models/blendshape_fernet.pt", help="the release file")
    p.set_defaults(func=cmd_ship)

    p = sub.add_parser("predict", help="expression and blendshape weights of every face in photos")
    p.add_argument("images", nargs="+", metavar="IMAGE",
                   help="photos (any size; RGB, gray, RGBA or 16-bit) or folders of them")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object per image a line: its faces' boxes, expressions, "
                        "probabilities and 53 weights, or an error")
    p.add_argument("--mesh", metavar="OUT.glb",
                   help="write the largest face, reconstructed (.glb/.obj/.ply; one image only)")
    p.add_argument("--model", help="a checkpoint (default: the shipped models/blendshape_fernet.pt)")
    p.add_argument("--no-flip", dest="flip", action="store_false",
                   help="run the crop once, without averaging in its mirror image")
    _add_rig_arg(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("app", help="serve the web app (Gradio) on this machine")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: localhost only)")
    p.add_argument("--port", type=int, help="port (default: the first free one from 7860)")
    p.add_argument("--share", action="store_true",
                   help="also ask Gradio for a public link (needs internet; without it the "
                        "app says so and serves locally)")
    p.add_argument("--model", help="a checkpoint (default: $BSVIZ_MODEL, else the shipped "
                                   "models/blendshape_fernet.pt)")
    p.add_argument("--auth", action="append", default=[], metavar="USER:PASSWORD",
                   help="ask for this login (repeatable); without it, a --host other than "
                        "localhost or --share serves anyone, with a warning")
    p.add_argument("--auth-file", metavar="FILE", help="logins, one user:password a line")
    p.set_defaults(func=cmd_app)

    p = sub.add_parser("demo", help="render the shipped rig with a sample expression")
    p.add_argument("--out-dir", default="out", help="folder for the images and GLB files")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    # Transparent huge pages for torch's allocator (read at its first allocation, so it must
    # be set before any tensor exists): each fresh 40 MB tensor costs about 5 ms of page faults
    # instead of 22 ms (the detector on a 1920x1080 photo: 309 ms instead of 351).
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    args = build_parser().parse_args(argv)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = lambda msg, *a, **k: print(f"bsviz: warning: {msg}", file=sys.stderr)
        try:
            status = args.func(args)
        except (ValueError, OSError) as e:  # RigError, WeightError, CliError are ValueErrors
            print(f"bsviz: error: {e}", file=sys.stderr)
            return 2
    return status or 0


if __name__ == "__main__":
    sys.exit(main())

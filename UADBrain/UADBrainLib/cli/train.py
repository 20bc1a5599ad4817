"""``uadbrain train``: every trainable model family behind one set of arguments."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from ..bundle import CONTRASTS
from ..errors import InputError
from ..inference.options import MAX_AGE_YEARS
from ..training.train import TrainConfig, train


def integer_list(text: str) -> tuple[int, ...]:
    """``"100,175,250"`` as integers, for argparse."""
    import argparse

    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list of integers") from None


def add_parser(subparsers) -> None:
    from .options import add_device_argument
    from ..inference.models.scores import SCORES
    from ..training.tasks import TASKS

    parser = subparsers.add_parser(
        "train", help="train a model on healthy brains and write a complete bundle",
        description="Train a learned anomaly model on synthetic healthy brains (from anatomical label "
                    "maps) or on a folder of real healthy scans, calibrate it on held-out healthy "
                    "volumes and write a bundle (weights, metadata.json, README.md) to --out.")
    parser.add_argument("--model", required=True, choices=sorted([*TASKS, "brainmask", "input-check", "tissue"]),
                        help="model family (brainmask: the brain extractor, training/brainmask.py; "
                             "input-check: the contrast check, training/input_check.py)")
    parser.add_argument("--contrast", action="append", dest="contrasts",
                        choices=CONTRASTS, help="contrast to train on (repeat for several)")
    parser.add_argument("--data", default="synthetic",
                        help="'synthetic', a folder of healthy scans or a BIDS dataset of healthy subjects")
    parser.add_argument("--out", required=True, type=Path, help="bundle folder to write")
    parser.add_argument("--steps", type=int, default=TrainConfig.steps)
    add_device_argument(parser)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    parser.add_argument("--init-from", metavar="BUNDLE",
                        help="start from a trained bundle's weights (a bundled name or folder) wherever names and "
                             "shapes match: fine-tune a bundled model on your healthy scans, or start pddpm/cddpm "
                             "from the bundled diffusion model")
    parser.add_argument("--label-maps", help="folder of label maps for --data synthetic "
                        "(default: the bundled example's)")
    parser.add_argument("--name", help="bundle name (default: the --out folder's name)")
    parser.add_argument("--spacing", type=float, default=TrainConfig.spacing, help="model grid spacing, mm")
    parser.add_argument("--context", type=int, default=TrainConfig.context,
                        help="neighbouring slices on each side given as channels (0 = 2D; the diffusion model is always 2D)")
    parser.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    parser.add_argument("--learning-rate", type=float, default=TrainConfig.learning_rate)
    parser.add_argument("--channels", default=",".join(map(str, TrainConfig.channels)),
                        help="U-Net channels per level, comma-separated")
    parser.add_argument("--patch", type=int, help="in-plane training window, pixels (default ~192 mm)")
    parser.add_argument("--score", choices=SCORES,
                        help="reconstruction models: how the reconstruction is scored (see uadbrain rescore --help; "
                             "default: kl-combined for cevae, residual otherwise)")
    parser.add_argument("--feature-model", help="--score perceptual, patchcore, padim and stfpm: the segmenter "
                        "or dae bundle whose encoder gives the features (default: segmenter)")
    parser.add_argument("--noise-std", default=",".join(f"{v:g}" for v in TrainConfig.noise_std),
                        help="dae: range LOW,HIGH of the coarse noise's standard deviation (normalised units)")
    parser.add_argument("--network-per-contrast", action="store_true",
                        help="dae, vae: train one network per contrast instead of one shared by all")
    parser.add_argument("--kl-weight", type=float, default=TrainConfig.kl_weight,
                        help="vae: weight of the KL divergence (0 trains a plain autoencoder)")
    parser.add_argument("--latent-channels", type=int, default=TrainConfig.latent_channels,
                        help="vae: latent channels per cell at 1/16 of the slice's resolution")
    parser.add_argument("--dense-latent", type=int, default=TrainConfig.dense_latent,
                        help="vae: one latent vector of this size instead of the spatial latent (Baur et "
                             "al. 2021's dense autoencoder; with --kl-weight 0 a plain dense AE)")
    parser.add_argument("--context-weight", type=float, default=TrainConfig.context_weight,
                        help="cevae: weight of the context-encoding loss")
    parser.add_argument("--gan-fraction", type=float, default=TrainConfig.gan_fraction,
                        help="fanogan: share of the steps that train the GAN; the rest train the encoder "
                             "(--dense-latent sets the latent size, default 128)")
    parser.add_argument("--skip-dropout", type=float, default=TrainConfig.skip_dropout,
                        help="skip-ae: channel dropout rate of the skip connections in training")
    parser.add_argument("--diffusion-start", type=int, default=TrainConfig.diffusion_start,
                        help="diffusion: noise slices to this step of 1000 (training and inference)")
    parser.add_argument("--diffusion-steps", type=int, default=TrainConfig.diffusion_steps,
                        help="diffusion: DDIM steps back to a clean slice at inference")
    parser.add_argument("--condition-size", type=int, default=TrainConfig.condition_size,
                        help="cddpm: numbers encoding the original slice for the denoiser")
    parser.add_argument("--patch-mm", type=float, default=TrainConfig.patch_mm,
                        help="pddpm: side of the square patch noised and restored at a time, mm")
    parser.add_argument("--noise-levels", type=integer_list, default=(),
                        help="diffusion: noise levels to reconstruct from for ensemble scores, comma-separated "
                             "(default: 50, 75 and 100 %% of --diffusion-start)")
    parser.add_argument("--ensemble-seeds", type=int, default=TrainConfig.ensemble_seeds,
                        help="diffusion: reconstructions per noise level of an ensemble score")
    parser.add_argument("--cohort-volumes", type=int, default=TrainConfig.cohort_volumes,
                        help="normative, patchcore: synthetic healthy brains whose statistics are fitted "
                             "(with --data FOLDER: every subject of its training split)")
    parser.add_argument("--age-range", type=float, nargs=2, metavar=("LOW", "HIGH"), default=None,
                        help="normative: condition the model on age, over a cohort aged LOW to HIGH years "
                             "(e.g. 20 90): synthetic brains of those ages (atrophy follows age), or with --data "
                             "FOLDER its subjects of those ages (participants.tsv/.csv: participant_id, age); "
                             "detect then takes --age")
    parser.add_argument("--reconstruction-model", default=TrainConfig.reconstruction_model,
                        help="learned-hybrid: the denoising-autoencoder bundle whose residual the segmenter sees")
    parser.add_argument("--memory-bank", type=int, default=TrainConfig.memory_bank,
                        help="patchcore: healthy patch features kept per contrast (a greedy coreset)")
    parser.add_argument("--lesion-masks", help="folder of binary lesion masks (NIfTI) whose shapes "
                        "synthetic anomalies borrow (default: ellipsoids and blobs only)")
    parser.add_argument("--heldout-appearance", action="append", dest="heldout_appearances",
                        help="anomaly appearance kept out of the segmenter's training and used to "
                             "validate it (repeat; default: tumour)")
    parser.add_argument("--validate-every", type=int, default=TrainConfig.validate_every)
    parser.add_argument("--checkpoint-every", type=int, default=TrainConfig.checkpoint_every)
    parser.add_argument("--validation-volumes", type=int, default=TrainConfig.validation_volumes)
    parser.add_argument("--calibration-volumes", type=int, default=TrainConfig.calibration_volumes)
    parser.add_argument("--calibration-spacing", type=float, default=TrainConfig.calibration_spacing,
                        help="spacing of the synthetic calibration brains, mm")
    parser.add_argument("--pool-size", type=int, default=TrainConfig.pool_size,
                        help="training volumes held in memory")
    parser.add_argument("--threads", type=int, default=TrainConfig.threads, help="CPU threads for torch")
    parser.add_argument("--cache-dir", help="keep generated training volumes here, to reuse across runs")
    parser.add_argument("--anatomies", type=int, default=1000,
                        help="input-check: synthetic anatomies to make training samples from")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run_train)


def run_train(args) -> int:
    if args.init_from and args.model in ("brainmask", "input-check", "tissue"):
        raise InputError(f"--init-from is for the anomaly models; --model {args.model} trains from scratch "
                         "(--resume continues its own checkpoint).")
    if args.model == "brainmask":
        return run_train_brainmask(args)
    if args.model == "input-check":
        return run_train_input_check(args)
    if args.model == "tissue":
        return run_train_tissue(args)
    if not args.contrasts:
        raise InputError("--contrast is required: the contrast(s) to train on (repeat for several).")
    try:
        channels = tuple(int(c) for c in args.channels.split(","))
    except ValueError:
        raise InputError(f"--channels '{args.channels}' is not a comma-separated list of integers.") from None
    try:
        low, high = (float(v) for v in args.noise_std.split(","))
    except ValueError:
        raise InputError(f"--noise-std '{args.noise_std}' is not LOW,HIGH (two numbers).") from None
    from ..inference.models.scores import score_refusal
    from ..training.tasks import TASKS

    if args.age_range and args.model != "normative":
        raise InputError(f"--age-range conditions the normative model on age; --model {args.model} is not "
                         "conditioned — leave --age-range out or train --model normative.")
    if args.age_range and not 0 <= args.age_range[0] < args.age_range[1] <= MAX_AGE_YEARS:
        raise InputError(f"--age-range {args.age_range[0]:g} {args.age_range[1]:g}: give LOW < HIGH within "
                         f"0-{MAX_AGE_YEARS:g} years.")
    if args.init_from and TASKS[args.model].fitted:
        raise InputError(f"--init-from starts a network's training; --model {args.model} fits statistics "
                         "and has no network to start from.")
    score = args.score or ("kl-combined" if args.model == "cevae" else "residual")
    refusal = score_refusal(score, TASKS[args.model].family)
    if refusal:
        raise InputError(f"--score {score}: {refusal}.")
    contrasts = list(dict.fromkeys(args.contrasts))
    config = TrainConfig(
        model=args.model, contrasts=contrasts, data=args.data, out=args.out, steps=args.steps,
        device=args.device, seed=args.seed, resume=args.resume, label_maps=args.label_maps,
        name=args.name, spacing=args.spacing, context=args.context, batch_size=args.batch_size,
        learning_rate=args.learning_rate, channels=channels, patch=args.patch, score=score,
        validate_every=args.validate_every, checkpoint_every=args.checkpoint_every,
        validation_volumes=args.validation_volumes, calibration_volumes=args.calibration_volumes,
        calibration_spacing=args.calibration_spacing,
        pool_size=args.pool_size, threads=args.threads, cache_dir=args.cache_dir,
        lesion_masks=args.lesion_masks, shared_network=not args.network_per_contrast, noise_std=(low, high),
        kl_weight=args.kl_weight, latent_channels=args.latent_channels, dense_latent=args.dense_latent,
        context_weight=args.context_weight, skip_dropout=args.skip_dropout, gan_fraction=args.gan_fraction,
        diffusion_start=args.diffusion_start, diffusion_steps=args.diffusion_steps, patch_mm=args.patch_mm,
        condition_size=args.condition_size,
        feature_model=args.feature_model, noise_levels=args.noise_levels, ensemble_seeds=args.ensemble_seeds,
        heldout_appearances=tuple(args.heldout_appearances or TrainConfig.heldout_appearances),
        init_from=args.init_from, cohort_volumes=args.cohort_volumes, memory_bank=args.memory_bank,
        reconstruction_model=args.reconstruction_model,
        age_range=tuple(args.age_range) if args.age_range else None,
        command="uadbrain " + " ".join(shlex.quote(a) for a in sys.argv[1:]))
    out = train(config, progress=not args.quiet)
    print(f"wrote bundle {out} (use it with --model {out})")
    return 0


def run_train_brainmask(args) -> int:
    """``uadbrain train --model brainmask``: the shared train arguments mapped onto this recipe.

    Uses ``--label-maps``, ``--out``, ``--steps``, ``--learning-rate``, ``--validate-every``,
    ``--validation-volumes``, ``--seed``, ``--threads``, ``--device`` and ``--resume``; the model
    sees every contrast, so ``--contrast`` is ignored.
    """
    from ..training.brainmask import BRAINMASK_BUNDLE, BrainmaskTrainingOptions, train_brainmask

    if not args.label_maps:
        raise InputError("--model brainmask needs --label-maps: the folder of whole-head label maps "
                         "(e.g. the SynthSeg training label maps).")
    options = BrainmaskTrainingOptions(
        label_maps=Path(args.label_maps), out=Path(args.out), steps=args.steps,
        learning_rate=args.learning_rate, validate_every=args.validate_every,
        validation_heads=args.validation_volumes, seed=args.seed, threads=args.threads,
        device=args.device, resume=args.resume)
    out = train_brainmask(options, log=lambda line: print(line, flush=True))
    print(f"wrote bundle {out} (copy it to Resources/Models/{BRAINMASK_BUNDLE} to make it the bundled "
          "brain extractor)")
    return 0


def run_train_input_check(args) -> int:
    """``uadbrain train --model input-check``: the shared train arguments mapped onto this recipe.

    Uses ``--label-maps``, ``--out``, ``--anatomies``, ``--steps``, ``--batch-size``, ``--learning-rate``,
    ``--validate-every``, ``--validation-volumes`` (validation anatomies), ``--seed``,
    ``--threads``, ``--device``, ``--cache-dir`` and ``--resume``; ``--contrast`` is ignored (the
    check learns every contrast).
    """
    from ..inference.input_check import INPUT_CHECK_BUNDLE
    from ..training.input_check import InputCheckTrainingOptions, train_input_check

    if not args.label_maps:
        raise InputError("--model input-check needs --label-maps: the folder of whole-head label maps "
                         "(e.g. the SynthSeg training label maps).")
    options = InputCheckTrainingOptions(
        label_maps=Path(args.label_maps), out=Path(args.out), anatomies=args.anatomies, steps=args.steps,
        batch_size=args.batch_size, learning_rate=args.learning_rate,
        validate_every=args.validate_every, validation_anatomies=args.validation_volumes,
        seed=args.seed, threads=args.threads, device=args.device,
        cache_dir=Path(args.cache_dir) if args.cache_dir else None, resume=args.resume)
    out = train_input_check(options, log=lambda line: print(line, flush=True))
    print(f"wrote bundle {out} (copy it to Resources/Models/{INPUT_CHECK_BUNDLE} to make it the bundled check)")
    return 0


def run_train_tissue(args) -> int:
    """``uadbrain train --model tissue``: the tissue network of the anatomy-aware normative model.

    Uses ``--label-maps``, ``--lesion-masks`` (outlines of the synthetic anomalies), ``--out``,
    ``--steps``, ``--learning-rate``, ``--validate-every``, ``--validation-volumes``, ``--seed``,
    ``--threads``, ``--device`` and ``--resume``; the network sees every contrast, so
    ``--contrast`` is ignored. Calibrate the bundle afterwards with ``uadbrain calibrate``.
    """
    from ..training.tissue import TissueTrainingOptions, train_tissue

    if not args.label_maps:
        raise InputError("--model tissue needs --label-maps: the folder of anatomical label maps "
                         "(e.g. the SynthSeg training label maps).")
    options = TissueTrainingOptions(
        label_maps=Path(args.label_maps), out=Path(args.out),
        lesion_masks=Path(args.lesion_masks) if args.lesion_masks else None, steps=args.steps,
        learning_rate=args.learning_rate, validate_every=args.validate_every,
        validation_brains=args.validation_volumes, seed=args.seed, threads=args.threads,
        device=args.device, resume=args.resume)
    out = train_tissue(options, log=lambda line: print(line, flush=True))
    print(f"wrote bundle {out} (calibrate it: uadbrain calibrate --model {out})")
    return 0

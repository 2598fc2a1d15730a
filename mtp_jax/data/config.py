"""Default data-pipeline configuration (the `config.data` section)."""
import ml_collections


def data_defaults() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.train_manifests = ""          # comma-separated JSONL manifests
  c.dev_manifest = ""
  c.sample_rate = 16000
  c.max_duration = 20.0           # seconds; longer utterances follow bad_input_policy
  c.min_duration = 0.1
  c.max_text_tokens = 127         # longer transcripts follow bad_input_policy; padded L <= round_up(127 + text_pad_extra, 8) = 128
  c.numbers_to_words = False      # text.normalize option for targets (and WER)
  c.batching = "2d"               # random | 1d | 2d
  c.batch_size = 16               # for random batching
  c.num_duration_bins = 16        # duration bins (at most; <= 32 shapes with num_token_bins=2)
  c.num_token_bins = 2            # token sub-buckets per duration bin (2d)
  c.binning = "min_padding"       # min_padding (exact DP, least padding) | equal_total (bins of equal total duration);
                                  # bench/data_padding.py: 16x2 min_padding ~4-5% audio padding, 8x4 equal_total ~9-12%
  c.audio_seconds_per_batch = 160.0   # padded-audio budget that sets per-bucket batch size
  c.tokens_per_batch = 4096       # padded-token budget, idem (whichever binds)
  c.bucket_batch_sizes = ""       # optional per-bucket override file (JSON), see bucketing.load_batch_size_overrides
  c.batch_size_multiple = 0       # batch sizes are multiples of this; 0 = jax.device_count()
  c.audio_pad_multiple = 1280     # padded samples S are a multiple (1280 = 8 frames of hop 160)
  c.token_pad_multiple = 8        # padded tokens L are a multiple
  c.text_pad_extra = 1            # L >= longest transcript + this (room for an eos)
  c.remainder = "fill"            # last partial batch of a bucket: fill (other utts of the bucket) | pad | drop
  c.bad_input_policy = "skip"     # skip | error
  c.validate_headers = True       # read every audio header up front (missing/corrupt/duration checks)
  c.duration_tolerance_s = 0.5    # manifest vs real duration: allowed difference is
  c.duration_tolerance_frac = 0.1  # max(tolerance_s, tolerance_frac * real duration)
  c.num_workers = 0               # grain worker processes (0 = in-process)
  c.num_threads = 2               # reading threads per process
  c.prefetch = 2                  # batches buffered (per worker)
  c.shuffle = True
  c.seed = 0
  c.eval_audio_multiple_s = 2.0   # eval batches: S rounded up to this many seconds
  c.eval_token_multiple = 32      # eval batches: L rounded up to this many tokens
  c.feature_cache = ""           # directory of cached frozen-encoder frames (mtp_jax.train.pretrained)
  c.tokenizer = ml_collections.ConfigDict()
  c.tokenizer.model_type = "unigram"  # unigram | bpe
  c.tokenizer.vocab_size = 256
  c.tokenizer.path = ""           # existing .model file; empty = train one into the workdir
  return c

"""The summary tables a page names as `<!-- report: summary:NAME -->`: which result of which
file goes in which row. Data only: a new row is a new `Row` here, no new code path (see
reporting.summary for what the fields mean)."""
from reporting.summary import Col, Row, Summary

GREEDY = (("strategy", "greedy"),)
KATHLEEN = (("test_set", "kathleen_test"),)


def _race(system: str) -> tuple:
  return (("system", system),)


# README's headline: our best model against faster-whisper, one run, the same utterances.
HEADLINE = Summary(
    columns=(Col("WER", "wer", "pct"), Col("RTFx", "rtfx"), Col("p50 latency", "latency_p50_s", "s"),
             Col("decoder calls/utt", "calls_per_utt"),
             Col("RTFx vs faster-whisper", "rtfx_vs_peer_fastest_greedy", "x")),
    rows=(
        Row("faster-whisper tiny.en, float32, greedy", "peer_whisper_wdec.json",
            _race("faster-whisper tiny.en float32 beam 1")),
        Row("faster-whisper tiny.en, int8, greedy", "peer_whisper_wdec.json",
            _race("faster-whisper tiny.en int8 beam 1")),
        Row("faster-whisper tiny.en, float32, beam 5", "peer_whisper_wdec.json",
            _race("faster-whisper tiny.en float32 beam 5")),
        Row("**mtp_jax**, Whisper tiny.en encoder + decoder, K=4 latent heads: greedy",
            "peer_whisper_wdec.json", _race("ours:wdec_k4j:greedy")),
        Row("**mtp_jax**, the same model: verify (output = greedy's)", "peer_whisper_wdec.json",
            _race("ours:wdec_k4j:verify")),
        Row("**mtp_jax**, the same model: tree (output = greedy's)", "peer_whisper_wdec.json",
            _race("ours:wdec_k4j:tree")),
        Row("Speech-LLaMA with a pretrained LLaMA (SmolLM2-135M): 51.1% greedy on all of "
            "Kathleen test, worse than its own CTC first pass (41.5%); at batch 1 on all 703, "
            "greedy RTFx 1.39× faster-whisper's (5.1% WER), verify 0.89×; decoded with the "
            "CTC head and the LM together (`joint`), a rebuild reads 39.9%",
            note="see docs/models.md"),
        Row("Long recordings (all 42 one-minute Kathleen test recordings): our window-trained "
            "model 8.8% (0.88× its WER one utterance at a time) at 1.08× faster-whisper's "
            "RTFx one recording at a time, 1.52× with chunks of all recordings batched (its "
            "greedy long-form: 6.1%, beam 5: 5.0%)",
            note="see docs/longform.md"),
    ),
    intro="Kathleen test (real read speech, text unseen in training), its first 150 "
          "utterances, batch 1, both systems in one run on the same 2 CPU cores.")

# Every real-speech model on the three test sets.
MODELS = Summary(
    columns=(Col("Kathleen utts", "utterances", where=KATHLEEN),
             Col("Kathleen greedy", "wer", "pct", KATHLEEN),
             Col("Kathleen beam B=4", "wer", "pct", KATHLEEN + (("strategy", "beam:beam=4"),)),
             Col("verify: fewer calls", "calls_reduction", "x", KATHLEEN + (("strategy", "verify"),)),
             Col("greedy RTFx", "rtfx", where=KATHLEEN),
             Col("projector CTC", "wer", "pct", KATHLEEN + (("strategy", "ctc"),)),
             Col("Kathleen joint CTC + LM, beam 4", "wer", "pct", KATHLEEN + (
                 ("strategy", "joint:beam=4:ctc_weight=0.5:length_bonus=2"),)),
             Col("FSDD greedy", "wer", "pct", (("test_set", "fsdd_test"),)),
             Col("AN4 greedy", "wer", "pct", (("test_set", "an4_test"),))),
    rows=(
        Row("Conformer (4.0M, from scratch, `demo_conformer` then real-speech fine-tune), K=4",
            "recipe_eval_realmix_demo_k4.json", GREEDY),
        Row("Whisper tiny.en encoder + LLaMA decoder from scratch (4.3M trained), K=4 heads "
            "trained with the trunk", "recipe_eval_whisper_tiny_k4_4000steps.json", GREEDY),
        Row("… K=1", "recipe_eval_whisper_tiny_k1_4000steps.json", GREEDY),
        Row("… K=1 then K=4 independent heads alone", "recipe_eval_whisper_tiny_k1_then_heads.json",
            GREEDY),
        Row("… K=1, every recipe sentence spoken", "recipe_eval_whisper_tiny_k1_allsent.json", GREEDY),
        Row("… the same, decoder pretrained on text first",
            "recipe_eval_whisper_tiny_k1_allsent_lm.json", GREEDY),
        Row("… every sentence, K=4 sequential heads, then a joint fine-tune",
            "hxs_allsent_sequential_joint_k4_b16.json", GREEDY),
        Row("Whisper tiny.en encoder + **Whisper tiny.en decoder** fine-tuned, K=4 latent heads "
            "alone", "recipe_eval_whisper_tiny_wdec_k4.json", GREEDY),
        Row("… the same commands, a second training run", "whxs_latent_k4_b16.json", GREEDY),
        Row("… decoder and heads then trained jointly", "whxs_latent_joint_k4_b16.json", GREEDY),
        Row("… jointly, with isolated words in training (`short=1`)",
            "whxs_latent_joint_short_k4_b16.json", GREEDY),
        Row("… 2 decoder blocks (tiny.en's first and last), heads alone",
            "whxs_dec2_latent_k4_b16.json", GREEDY),
        Row("… 6 decoder blocks (middle blocks repeated), heads alone",
            "whxs_dec6_latent_k4_b16.json", GREEDY),
        Row("Speech-LLaMA: Whisper tiny.en encoder + SmolLM2-135M (frozen, LoRA) reading its "
            "CTC first pass as 1-best tokens, K=4 latent heads (Kathleen: first 128)",
            "recipe_eval_smollm2_k4p_b16.json", GREEDY),
        Row("… reading a mixture of the first pass's 4 likeliest tokens, longer alignment and "
            "LM run", "recipe_eval_smollm2_mix_b16.json", GREEDY),
        Row("… the same recipe rebuilt (one 1,200-step alignment, 500 LM-run steps), also "
            "decoded with the CTC head and the LM together (`joint`)",
            "recipe_eval_smollm2_joint_b16.json", GREEDY),
        Row("… SmolLM2's tokenizer with its first 2,000 merges only (shorter pieces; a "
            "6,000-step alignment scoring the 2,236 ids they use, 500 LM-run steps)",
            "recipe_eval_smollm2_m2k_b16.json", GREEDY),
    ),
    intro="Greedy WER on every utterance of each test set (Kathleen test: the first 100 for the "
          "Conformer), batch 16; *verify: fewer calls* is the decoder-call reduction of "
          "verification (output identical to greedy's) on Kathleen test; *greedy RTFx* is audio "
          "seconds per second on Kathleen test at batch 16, 2 CPU cores (– where other jobs "
          "shared the machine).")

_MWER_COLS = (Col("utterances scored", "search.0.utterances"),
              Col("objective", "finetune.objective"), Col("steps", "finetune.finetune_steps"),
              Col("lr", "finetune.finetune_lr"), Col("CE weight", "finetune.lambda_ce"),
              Col("greedy WER before", "finetune.wer_before", "pct2"),
              Col("after", "finetune.wer_after", "pct2"),
              Col("relative", "finetune.wer_after / finetune.wer_before", "rel"))

# MWER fine-tuning of the model that reads speech (Whisper's decoder, joint K=4 heads).
MWER_WDEC = Summary(
    columns=_MWER_COLS,
    rows=(
        Row("MWER, lr 1e-4, CE weight 0.01", "mwer_whisper_tiny_wdec_k4j.json"),
        Row("MWER, lr 1e-5, CE weight 0.1", "mwer_whisper_tiny_wdec_k4j_lr1e-5.json"),
        Row("cross-entropy control, same steps, lr and data", "mwer_whisper_tiny_wdec_k4j_lr1e-5_ce.json"),
        Row("MWER, lr 1e-5, CE weight 0.1, all of Kathleen test",
            "mwer_whisper_tiny_wdec_k4j_lr1e-5_all.json"),
        Row("cross-entropy control, all of Kathleen test",
            "mwer_whisper_tiny_wdec_k4j_lr1e-5_ce_all.json"),
    ),
    intro="Fine-tuning from `runs/wt/wdec_k4j` on the training mix (N-best: prefix beam search, "
          "B=4, 4-token blocks; objective – is MWER); greedy WER on the first N Kathleen-test "
          "utterances.")

# MWER on the from-scratch models, which did not help.
MWER_SCRATCH = Summary(
    columns=_MWER_COLS,
    rows=(
        Row("Conformer demo model, synthetic test", "mwer_demo.json"),
        Row("Conformer, real-speech fine-tuned, Kathleen test", "mwer_kathleen.json"),
        Row("Whisper encoder + LLaMA decoder (K=1 trunk + heads), training mix",
            "mwer_whisper_tiny_k1_heads.json"),
        Row("… training mix, gentler", "attempts/mwer_whisper_tiny_k1_heads_lr3e-5_ce0.1.json"),
        Row("… held-out synthetic speech", "attempts/mwer_whisper_tiny_k1_heads_unseen_synth.json"),
        Row("… held-out synthetic speech, gentler, 200 steps",
            "attempts/mwer_whisper_tiny_k1_heads_unseen_synth_lr3e-5_ce0.1.json"),
        Row("… cross-entropy control on the same held-out speech",
            "attempts/mwer_whisper_tiny_k1_heads_unseen_synth_lr3e-5_ce_control.json"),
    ),
    intro="Greedy WER before and after fine-tuning (objective – is MWER).")

SUMMARIES = {"headline": HEADLINE, "models": MODELS, "mwer_wdec": MWER_WDEC,
             "mwer_scratch": MWER_SCRATCH}

"""A self-contained HTML report: inline CSS, plots embedded as base64 PNG, no network reference."""

from __future__ import annotations

import base64
import html
import io
from typing import Any

import numpy as np
import pandas as pd

from chorus.metrics.classification import ClassificationMetrics
from chorus.promotion import verdict

PAGE_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:980px;color:#222}
h1{font-size:1.6rem}h2{font-size:1.2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ccc;padding:.25rem .6rem;text-align:right}
th{background:#f4f4f4}td.l,th.l{text-align:left}.muted{color:#666;font-size:.9rem}
img{max-width:100%;border:1px solid #eee}code{background:#f4f4f4;padding:0 .2rem}
"""


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _figure_uri(fig: Any) -> str:
    data = _png(fig)
    _pyplot().close(fig)
    return data


def confusion_plot(metrics: ClassificationMetrics) -> str:
    plt = _pyplot()
    matrix = np.asarray(metrics.confusion, dtype=float)
    norm = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = max(4.0, 0.6 * len(metrics.classes) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(metrics.classes)), metrics.classes, rotation=45, ha="right")
    ax.set_yticks(range(len(metrics.classes)), metrics.classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            ax.text(j, i, int(matrix[i, j]), ha="center", va="center", color="white" if norm[i, j] > 0.5 else "black")
    ax.set_title("Confusion matrix (counts; colour = row-normalised)")
    return _figure_uri(fig)


def multilabel_curves_plot(truth: np.ndarray, scores: np.ndarray, labels: list[str]) -> str:
    """Micro-averaged PR and ROC curves, and PR-AUC per label beside its prevalence."""
    from sklearn.metrics import (
        average_precision_score,
        precision_recall_curve,
        roc_curve,
    )

    plt = _pyplot()
    present = truth.sum(0) > 0
    fig, (pr, roc, bars) = plt.subplots(1, 3, figsize=(13, 3.6))
    precision, recall, _ = precision_recall_curve(truth[:, present].ravel(), scores[:, present].ravel())
    pr.plot(recall, precision)
    pr.axhline(truth[:, present].mean(), color="grey", ls="--", label="prevalence")
    pr.set(xlabel="recall", ylabel="precision", title="PR (micro)")
    pr.legend()
    both = present & (truth.sum(0) < len(truth))
    fpr, tpr, _ = roc_curve(truth[:, both].ravel(), scores[:, both].ravel())
    roc.plot(fpr, tpr)
    roc.plot([0, 1], [0, 1], color="grey", ls="--")
    roc.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (micro)")
    names = [n for n, p in zip(labels, present, strict=True) if p]
    aps = [average_precision_score(truth[:, j], scores[:, j]) for j in np.flatnonzero(present)]
    x = np.arange(len(names))
    bars.bar(x - 0.2, aps, 0.4, label="PR-AUC")
    bars.bar(x + 0.2, truth[:, present].mean(0), 0.4, label="prevalence")
    bars.set_xticks(x, names, rotation=60, ha="right")
    bars.set(title="per label")
    bars.legend()
    return _figure_uri(fig)


def embedding_plot(vectors: np.ndarray, labels: list[str]) -> str:
    """The semantic vectors projected to 2-D by PCA, coloured by label."""
    from sklearn.decomposition import PCA

    plt = _pyplot()
    points = PCA(n_components=2, random_state=0).fit_transform(vectors)
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    for name in sorted(set(labels)):
        chosen = np.array([lab == name for lab in labels])
        ax.scatter(points[chosen, 0], points[chosen, 1], s=14, label=name)
    ax.set(title="held-out segments, semantic vectors (PCA 2-D)")
    ax.legend(fontsize=7, loc="best")
    return _figure_uri(fig)


def history_figure(history: list[dict[str, float]]) -> Any:
    """Training curves: train loss and the validation score per epoch (a matplotlib figure)."""
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    fig, ax1 = plt.subplots(figsize=(6, 3.2))
    ax1.plot(epochs, [h.get("train_loss", np.nan) for h in history], label="train loss", color="tab:red")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("train loss")
    ax2 = ax1.twinx()
    ax2.plot(epochs, [h.get("valid_score", np.nan) for h in history], label="validation score", color="tab:blue")
    ax2.set_ylabel("validation score (track level)")
    ax2.set_ylim(0, 1)
    fig.legend(loc="lower center", ncol=2, bbox_to_anchor=(0.5, -0.08))
    return fig


def history_plot(history: list[dict[str, float]]) -> str | None:
    return _figure_uri(history_figure(history)) if history else None


def html_table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f'<th class="{"l" if i == 0 else ""}">{html.escape(str(h))}</th>' for i, h in enumerate(header))
    body = ""
    for row in rows:
        cells = "".join(
            f'<td class="{"l" if i == 0 else ""}">{html.escape(f"{v:.3f}" if isinstance(v, float) else str(v))}</td>'
            for i, v in enumerate(row)
        )
        body += f"<tr>{cells}</tr>"
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _with_ci(value: dict[str, Any]) -> str:
    return f"{value['mean']:.3f} [{value['ci'][0]:.3f}, {value['ci'][1]:.3f}]"


def candidates_section(rows: list[dict[str, Any]]) -> str:
    """Every candidate of the run on the held-out split, each beside its trivial baseline."""
    if not rows:
        return ""
    body = [[r["candidate"], r["registered"], r["task"], r["metric"], _with_ci(r["value"]), r["baseline_name"],
             r["baseline"], r.get("valid_score", float("nan"))] for r in rows]
    return ("<h2>Candidates</h2><p class=\"muted\">Every model and baseline trained by this run, scored on the "
            "held-out split at track level, with 95% bootstrap intervals over tracks.</p>"
            + html_table(["candidate", "registered", "task", "metric", "test [95% CI]", "baseline", "baseline value",
                      "validation"], body))


def promotion_section(decision: dict[str, Any] | None) -> str:
    """The latest gate decision for the model: challenger vs champion vs trivial baseline."""
    if not decision:
        return ""
    if decision.get("action") == "rollback":
        return f"<h2>Promotion</h2><p>{html.escape(decision['reason'])} ({html.escape(decision['time'])})</p>"
    champion = decision.get("champion_metrics") or {}
    rule = decision.get("rule") or {}
    rows = [[metric, value, champion.get(metric, float("nan")),
             decision["baseline"] if metric == rule.get("primary") else "",
             "primary" if metric == rule.get("primary") else f"guard (tolerance {rule.get('guards', {}).get(metric, '')})"]
            for metric, value in decision["challenger_metrics"].items()]
    champion_name = f"champion v{decision['champion']}" if decision.get("champion") else "champion (none)"
    decided_on = html.escape(str(decision.get("split", "test")))  # audit rows before the split was recorded: test
    return (f"<h2>Promotion</h2><p><b>{html.escape(verdict(decision))}</b> challenger v{decision['challenger']}: "
            f"{html.escape(decision['reason'])} <span class=\"muted\">({html.escape(decision['time'])}, trigger "
            f"{html.escape(str(decision['trigger']))}; decided on the {decided_on} split, scored afresh: this report's "
            f"figures are on the held-out split, touched only after the decision)</span></p>"
            + html_table(["metric", f"challenger v{decision['challenger']}", champion_name, "trivial baseline", "rule"], rows))


def retrieval_section(retrieval: dict[str, Any] | None) -> str:
    if not retrieval or not retrieval.get("rankings"):
        return ""
    k = retrieval["k"]
    rows = [[name, r["bits"] if r["bits"] else "", r["map_at_k"], r["precision_at_k"], r["original_in_top_k"]]
            for name, r in retrieval["rankings"].items()]
    rows += [[f"random {bits}-bit codes (mean of {r['rounds']}; 95% of draws in [{r['ci'][0]:.3f}, {r['ci'][1]:.3f}])",
              bits, r["mean"], "", ""] for bits, r in retrieval.get("random_codes", {}).items()]
    ranking = html_table(["ranking", "bits", f"mAP@{k}", f"precision@{k}", f"own track in top {k}"], rows)
    curve = html_table(["PCA dims", "accuracy", "distortion rate"],
                   [[c["dims"], c["accuracy"], c["distortion_rate"]] for c in retrieval.get("compression", [])])
    return (f"<h2>Retrieval</h2><p class=\"muted\">Held-out segments query each other; relevant = same style "
            f"(chance precision {retrieval['chance_precision']:.3f}; mAP@k of random codes in the table: the score a "
            f"model that learned nothing reaches on this metric); semantic vectors: "
            f"{html.escape(retrieval['semantic_model'])}. Hash baselines take the semantic vectors to the same bit "
            f"budget.</p>{ranking}<h2>Compression</h2><p class=\"muted\">Semantic vectors reduced by PCA (fit on "
            "train): logistic-regression accuracy and relative reconstruction error.</p>" + curve)


def search_section(index: dict[str, Any] | None) -> str:
    """The search index's degraded-copy check: per mode, the share of tracks found from each copy."""
    if not index or not index.get("check"):
        return ""
    check = index["check"]
    found = check["found_in_top_k"]
    degradations = sorted(next(iter(found.values())))
    rows = [[mode, *(found[mode][d] for d in degradations)] for mode in found]
    cfg = check.get("settings", {})
    return (f"<h2>Similar-song search</h2><p class=\"muted\">Index {html.escape(index['name'])} "
            f"({index['tracks']} tracks, {index['bits']}-bit codes, {index['dims']}-d semantic vectors; "
            f"{html.escape(index['hash_index'])} / {html.escape(index['vector_index'])}). Each of {check['tracks']} tracks "
            f"queried with a degraded copy of its audio: another {cfg.get('excerpt_s', '?')} s excerpt, white noise at "
            f"{cfg.get('snr_db', '?')} dB SNR, a {cfg.get('gain_db', '?')} dB gain change. Share of tracks whose original "
            f"is in the top {check['k']} (a near-duplicate check: the index holds each queried track itself, training "
            f"tracks included; not a measure of similar-song quality):</p>" + html_table(["mode", *degradations], rows)
            + _held_out_search(check, degradations))


def _held_out_search(check: dict[str, Any], degradations: list[str]) -> str:
    held = check.get("held_out")
    if not held:
        return ""
    found = held["found_in_top_k"]
    rows = [[mode, *(found[mode][d] for d in degradations)] for mode in found]
    return (f"<p class=\"muted\">The same for the {held['tracks']} tracks of the {html.escape(held['split'])} split "
            "alone (tracks no model was fitted or chosen on):</p>" + html_table(["mode", *degradations], rows))


def melody_section(melody: dict[str, Any] | None) -> str:
    """Query by humming: per distortion level, where the sung track ranks (the melody index, the
    chroma + DTW baseline, random, the oracle index of the scores' melodies), and the
    transcription's accuracy against the scores."""
    if not melody or not melody.get("levels"):
        return ""
    rows = []
    for level, result in melody["levels"].items():
        for method in ("melody index", "chroma + DTW", "oracle (score melodies)"):
            if method in result:
                r = result[method]
                rows.append([level, method, result["queries"], _with_ci(r["top1"]), _with_ci(r["top10"]), _with_ci(r["mrr"])])
        rows.append([level, "random ranking (exact)", result["queries"], result["random"]["top1"], result["random"]["top10"],
                     result["random"]["mrr"]])
    transcription = melody.get("transcription") or {}
    accuracy = "" if not transcription else html_table(
        ["transcription against the scores (mir_eval)", f"mean over {transcription['n']} tracks [95% CI]"],
        [["note F-measure, all notes (onset 50 ms, pitch 50 cents)", _with_ci(transcription["notes_f"])],
         ["note F-measure, melody line", _with_ci(transcription["melody_f"])],
         ["raw pitch accuracy, melody line", _with_ci(transcription["raw_pitch_accuracy"])]])
    latency = melody.get("latency_ms") or {}
    return (f"<h2>Find a song by its tune</h2><p class=\"muted\">Tracks of the {html.escape(melody['query_split'])} split "
            f"sung from their score's melody (transposed, at another tempo, in a synthetic voice; 'wrong10': 10% wrong "
            f"notes and 30 cents of drift), transcribed and searched against the melody index of {melody['catalogue']} "
            "tracks built from the audio. A hit is any rendering of the same work. Median search "
            f"{latency.get('search_median') or float('nan'):.1f} ms after {latency.get('transcribe_median') or float('nan'):.0f} ms "
            "of transcription.</p>"
            + html_table(["queries", "ranking", "n", "top-1 [95% CI]", "top-10 [95% CI]", "MRR [95% CI]"], rows) + accuracy)


def personal_section(personal: dict[str, Any] | None) -> str:
    """The personalised mood model judged by the article's protocol on test songs: per scheme,
    precision/recall/F1/Jaccard @ k with intervals over listeners, the margins, and a plot of
    the per-listener margins over the model's global head."""
    if not personal or not (personal.get("test") or {}).get("listeners"):
        return ""
    test = personal["test"]
    rows = [[scheme, *(_with_ci(values[m]) for m in ("precision", "recall", "f1", "jaccard"))]
            for scheme, values in test["schemes"].items()]
    margins = [[name, _with_ci(value), "yes" if value["excludes_zero"] else "no"]
               for name, value in test["margins_f1"].items() if value]
    share = test.get("share_of_truth_margin")
    figure = ""
    per = test.get("per_listener_f1", {})
    if "personalised" in per and "global head" in per:
        plt = _pyplot()
        diff = np.sort(np.asarray(per["personalised"]) - np.asarray(per["global head"]))
        fig, ax = plt.subplots(figsize=(6, 2.6))
        ax.bar(np.arange(len(diff)), diff, width=1.0, color=np.where(diff >= 0, "#2a7", "#c44"))
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xlabel("listeners (sorted)")
        ax.set_ylabel(f"F1@{test['k']} margin")
        ax.set_title("personalised - global head, per held-out listener")
        fig.tight_layout()
        figure = f'<img alt="per-listener margins" src="{_figure_uri(fig)}">'
    encoder = personal.get("encoder", {})
    return (f"<h2>Personalised moods</h2><p class=\"muted\">The personalised model "
            f"(v{html.escape(str(personal.get('version', '?')))}, heads per listener, per "
            f"{html.escape(str(personal.get('group_attribute')))} group and global on the embedding of "
            f"{html.escape(str(encoder.get('name', '?')))} v{html.escape(str(encoder.get('version', '?')))}), trained on "
            f"the personal truth of training songs, judged on {test['listeners']} listeners' own tags of "
            f"{test['held_out_pairs']} test songs (audio it never saw) from the audio alone; personal and global "
            f"truth need others' tags of those songs and are the reference. Share of truth's margin kept: "
            f"{'n/a' if share is None else f'{share:.0%}'}.</p>"
            + html_table(["scheme", f"precision@{test['k']}", f"recall@{test['k']}", f"F1@{test['k']}", f"Jaccard@{test['k']}"],
                         rows)
            + html_table(["F1 margin", "mean [95% CI]", "interval excludes 0"], margins) + figure)


def voting_section(voting: dict[str, Any] | None) -> str:
    """The held-out-tags protocol table (docs/method.md, "Labels") and the labels' quality."""
    if not voting or not voting.get("schemes"):
        return ""
    metrics = ("precision", "recall", "f1", "jaccard")
    rows = [[scheme, *(_with_ci(values[m]) for m in metrics)] for scheme, values in voting["schemes"].items()]
    rows.append(["personal - global", *(_with_ci(voting["margin_personal_minus_global"][m]) for m in metrics)])
    table = html_table(["scheme", f"precision@{voting['k']}", f"recall@{voting['k']}", "F1", "Jaccard"], rows)
    quality = voting.get("label_quality") or {}
    quality_rows = [[kind, quality[kind]["tracks"], quality[kind]["top1_accuracy"], quality[kind]["top_k_hit_rate"]]
                    for kind in ("global", "group") if kind in quality]
    quality_html = ""
    if quality_rows:
        quality_html = ("<p>How well voted truth recovers each demo track's planted mood (chance: "
                        f"top-1 {quality['chance_top1']:.3f}, top-{quality['k']} {quality['chance_top_k']:.3f}).</p>"
                        + html_table(["truth", "tracks", "top-1 accuracy", f"top-{quality['k']} hit rate"], quality_rows))
    settings = ", ".join(f"{k}={v}" for k, v in voting.get("settings", {}).items())
    return (f"<h2>Voted labels: the held-out-tags protocol</h2><p class=\"muted\">{voting['users']} users, "
            f"{voting['held_out_pairs']} held-out (user, song) pairs; each user's own tags predicted from truth built "
            f"without them; mean over users with 95% bootstrap intervals. {html.escape(settings)}</p>{table}{quality_html}")


def classification_sections(metrics: ClassificationMetrics) -> str:
    headline = html_table(["metric", "value"], [["tracks evaluated", metrics.n], ["accuracy", metrics.accuracy],
                                            ["balanced accuracy", metrics.balanced_accuracy],
                                            ["majority-class baseline", metrics.majority_baseline]])
    per_class = html_table(["class", "precision", "recall", "F1", "support"],
                       [[c, m["precision"], m["recall"], m["f1"], m["support"]] for c, m in metrics.per_class.items()])
    confusion = html_table(["actual \\ predicted", *metrics.classes],
                       [[c, *row] for c, row in zip(metrics.classes, metrics.confusion, strict=True)])
    return (f"<h2>Headline</h2>{headline}<h2>Per class</h2>{per_class}<h2>Confusion matrix</h2><p class=\"muted\">Rows "
            "are actual classes, columns predicted; track-level predictions average the segment probabilities of each "
            f"track.</p>{confusion}<img alt=\"confusion matrix\" src=\"{confusion_plot(metrics)}\">")


def tagging_sections(result: dict[str, Any]) -> str:
    """Multi-label headline (macro PR-AUC with its interval, ROC-AUC, micro, MAP, baseline) and the
    per-label table."""
    headline = html_table(["metric", "value"], [
        ["tracks evaluated", result["n"]], ["macro PR-AUC", _with_ci(result["macro_pr_auc"])],
        ["macro ROC-AUC", result["macro_roc_auc"]], ["micro PR-AUC", result["micro_pr_auc"]],
        ["micro ROC-AUC", result["micro_roc_auc"]], ["MAP (per track)", result["map_tracks"]],
        ["prevalence baseline (macro PR-AUC)", result["prevalence_baseline"]]])
    per_label = html_table(["label", "positives", "prevalence", "PR-AUC", "ROC-AUC"],
                       [[label, r["positives"], r["prevalence"], r.get("pr_auc", ""), r.get("roc_auc", "")]
                        for label, r in result["per_label"].items()])
    return f"<h2>Headline</h2>{headline}<h2>Per label</h2>{per_label}"


def protocol_section(protocol: dict[str, Any] | None) -> str:
    if not protocol:
        return ""
    published = protocol.get("published") or []
    table = ""
    if published:
        columns = [c for c in published[0] if c != "work"]
        table = ("<p><b>Published figures of other work on this dataset, for context only: not chorus's results, and "
                 "not necessarily the same split or preprocessing.</b></p>"
                 + html_table(["other work", *columns], [[r["work"], *(r[c] for c in columns)] for r in published]))
    return (f"<h2>Protocol</h2><p>{html.escape(protocol['name'])} (dataset: {html.escape(str(protocol['dataset']))})."
            f"</p>{table}")


def render_report(
    title: str,
    subject: dict[str, Any],
    metrics: ClassificationMetrics | None,
    history: list[dict[str, float]],
    notes: list[str] | None = None,
    voting: dict[str, Any] | None = None,
    candidates: list[dict[str, Any]] | None = None,
    retrieval: dict[str, Any] | None = None,
    figures: list[tuple[str, str]] | None = None,
    promotion: dict[str, Any] | None = None,
    search: dict[str, Any] | None = None,
    tagging: dict[str, Any] | None = None,
    protocol: dict[str, Any] | None = None,
    cards: list[tuple[str, str]] | None = None,
    melody: dict[str, Any] | None = None,
    personal: dict[str, Any] | None = None,
) -> str:
    """The evaluation report as one HTML string: a single-label subject (``metrics``) or a
    multi-label one (``tagging``: multilabel_metrics of the subject); ``cards``: (model, link)
    of each model's card, relative to the report."""
    facts = html_table(["", ""], [[k, v] for k, v in subject.items()])
    body = tagging_sections(tagging) if tagging is not None else classification_sections(metrics)  # type: ignore[arg-type]
    plots = ""
    curve = history_plot(history)
    if curve:
        plots += f'<h2>Training curves</h2><img alt="training curves" src="{curve}">'
    for heading, uri in figures or []:
        plots += f'<h2>{html.escape(heading)}</h2><img alt="{html.escape(heading)}" src="{uri}">'
    note_html = "".join(f"<li>{html.escape(n)}</li>" for n in (notes or []))
    card_html = "".join(f'<li><a href="{html.escape(href)}">{html.escape(name)}</a></li>' for name, href in (cards or []))
    card_section = f"<h2>Model cards</h2><ul>{card_html}</ul>" if cards else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{PAGE_CSS}</style></head><body>
<h1>{html.escape(title)}</h1>
<h2>What was evaluated</h2>{facts}
{protocol_section(protocol)}
{body}{plots}
{promotion_section(promotion)}
{candidates_section(candidates or [])}
{retrieval_section(retrieval)}
{search_section(search)}
{melody_section(melody)}
{personal_section(personal)}
{voting_section(voting)}
{card_section}
<h2>Notes</h2><ul>{note_html}</ul>
</body></html>
"""


# Published figures for context in the report, clearly other work: (dataset source, kind) -> rows.
PUBLISHED_REFERENCES: dict[tuple[str, str], list[dict[str, Any]]] = {
    ("mtat", "multi"): [{"work": "Won et al. 2020, short-chunk CNN + residual, MagnaTagATune top-50",
                         "macro ROC-AUC": 0.913, "macro PR-AUC": 0.461}],
    ("jamendo", "multi"): [{"work": "MediaEval 2019 Emotion and Theme Recognition, best submission (mood/theme)",
                            "macro ROC-AUC": 0.773, "macro PR-AUC": 0.155}],
    ("gtzan", "single"): [{"work": "published CNN result on the GTZAN fault-filtered split (Kereliuk, Sturm and Larsen 2015)",
                           "accuracy": 0.797}],
}


def evaluation_protocol(tracks: pd.DataFrame, multi: bool) -> dict[str, Any]:
    """How the subject is judged: the dataset's usual protocol, named, with published figures of
    other work on the same dataset beside ours (never as ours)."""
    sources = sorted(set(tracks["source"].astype(str))) if "source" in tracks.columns else []
    source = sources[0] if len(sources) == 1 else "mixed"
    if multi:
        name = ("tagging: macro ROC-AUC and PR-AUC over the task's labels (per-label table too); "
                "track-level predictions = mean of segment predictions")
    else:
        name = ("classification: accuracy and confusion matrix; track-level predictions = mean of segment "
                "probabilities")
    kind = "multi" if multi else "single"
    return {"name": name, "dataset": source, "published": PUBLISHED_REFERENCES.get((source, kind), [])}

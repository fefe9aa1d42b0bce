"""Multi-label classifiers: K independent outputs, any subset of the labels per image.

A multi-label model is K binary classifiers that share a backbone, and cnnaudit audits it as that: each
label's decision (its output above its threshold) is seen as a two-class model (`shared.label_model`) on
the data with that label as class 1 (`Dataset.label_view`), and every check runs on it unchanged, so a
label's robustness, corruption, subgroup, shortcut, label-issue and training results are exactly those
of the binary classifier it is (tests/test_multilabel.py audits such a twin on its own). The labels share
every forward pass and decoded batch that does not depend on the label (`shared`): a K-label audit costs
one audit's clean, corruption, shift and occlusion passes; only attacks are per label (`--labels`).

What only the joint view has (per-label AUROC with DeLong intervals, average precision, macro and micro
averages, subset accuracy, Hamming loss, label co-occurrence and confused pairs, the label-set attack's
worst case) is the `multilabel` check (checks/multilabel.py), computed from its own rows, one per
(image, label). `audit.run_labels` runs all of it.
"""

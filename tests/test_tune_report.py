"""The search report's per-trial table: every searched recipe value appears in it."""

from keras_resnet.tuning.report import TrialRecord, format_trials

# Trial 037 of the two-H200 search (docs/results/tuning/h200x2_search/trials.md).
VALUES = {
    "stem": "cifar",
    "drop_path_rate": 0.006331494808469418,
    "learning_rate": 0.06605015482824049,
    "weight_decay": 0.0026832158394918607,
    "label_smoothing": 0.08596800702316465,
    "erasing": 0.5188660387349024,
    "mixup": 0.07495234950824284,
    "cutmix": 0.06344783527567299,
    "depth": "18",
    "block": "basic",
    "width": 1.25,
    "downsample": "avg",
    "ema": 0.99,
}


def test_trial_table_shows_every_recipe_value():
    record = TrialRecord("037", "COMPLETED", VALUES, 0.9255, 17_452_730, 1_424_100_000, 36.3, 9)
    row = format_trials([record]).splitlines()[2]
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[:4] == [
        "037",
        "COMPLETED",
        "resnet18 basic w1.25 cifar avg-down dp0.00633",
        "0.0661",
    ]
    assert cells[5] == "ls 0.086 erasing 0.519 ema 0.99 mixup 0.075 cutmix 0.0634"
    assert cells[6:10] == ["9", "17,452,730", "1424.1", "0.9255"]

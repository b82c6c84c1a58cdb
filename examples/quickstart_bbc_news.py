"""User story: "I have labelled news articles and want a small classifier I can save and reload."

Trains a label-token adapter on a stratified slice of BBC News with all-MiniLM-L6-v2 (both offline), evaluates it,
saves it (a few hundred kB), reloads it onto a fresh backbone and predicts. About two minutes on 2 CPU cores.

    python examples/quickstart_bbc_news.py
"""

from __future__ import annotations

import tempfile

from transformers import AutoModel, AutoTokenizer, DataCollatorWithPadding, Trainer, TrainingArguments

from labeltok_peft import LabelTokConfig, LabelTokModel, get_labeltok_model, make_compute_metrics, tokenize_function
from labeltok_peft.corpora import load_bbc_news
from labeltok_peft.optim import create_optimizer
from labeltok_peft.pretrained import resolve_model_path


def main() -> None:
    path = resolve_model_path("all-MiniLM-L6-v2")
    tokenizer = AutoTokenizer.from_pretrained(path)
    splits = load_bbc_news(per_label=60)
    labels = splits["train"].features["label"].names

    config = LabelTokConfig(labels=labels, lora={"r": 16, "target_modules": ["query", "value"]})
    model = get_labeltok_model(AutoModel.from_pretrained(path, add_pooling_layer=False), config, tokenizer=tokenizer)
    model.print_trainable_parameters()

    preprocess = tokenize_function(tokenizer, config, "text", "label", max_length=128)
    train, test = (
        splits[name].map(preprocess, batched=True, with_indices=True, remove_columns=["text", "label"])
        for name in ("train", "test")
    )
    with tempfile.TemporaryDirectory() as output_dir:
        trainer = Trainer(
            model=model,
            args=TrainingArguments(
                output_dir,
                num_train_epochs=2,
                per_device_train_batch_size=16,
                learning_rate=5e-4,
                warmup_steps=0.1,
                label_names=["labels"],
                save_strategy="no",
                report_to=[],
                logging_steps=5,
            ),
            train_dataset=train,
            eval_dataset=test,
            data_collator=DataCollatorWithPadding(tokenizer),
            compute_metrics=make_compute_metrics(multi_label=False),
            optimizers=(create_optimizer(model, 5e-4, label_learning_rate=5e-2), None),
        )
        trainer.train()
        metrics = trainer.evaluate()
        print({key: round(value, 3) for key, value in metrics.items() if key.startswith("eval_")})

        model.save_pretrained(f"{output_dir}/bbc_adapter", dataset_name="bbc_news", metrics=metrics)
        fresh_backbone = AutoModel.from_pretrained(path, add_pooling_layer=False)
        reloaded = LabelTokModel.from_pretrained(fresh_backbone, f"{output_dir}/bbc_adapter", tokenizer=tokenizer)

    texts = [
        "The striker scored twice as the club won the cup final.",
        "Shares in the bank fell after it warned that profits would be lower.",
        "The new phone has a faster chip and a better camera.",
    ]
    for text, prediction in zip(texts, reloaded.predict(texts), strict=True):
        print(f"{prediction['label']:>13}  {prediction['score']:.2f}  {text}")


if __name__ == "__main__":
    main()

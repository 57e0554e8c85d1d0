"""CLIP on CIFAR-10 captions, then zero-shot classification with unseen prompts.

    KERAS_SSL_DATA_DIR=/work/shared/data KERAS_BACKEND=torch python examples/clip_cifar10.py --epochs 5

Captions come from the class names with varied templates and synonyms
("a blurry photo of a pony."); the zero-shot prompts (`EVAL_TEMPLATES`,
"this is an image of a horse.") appear in no training caption.
"""

import common
import keras

from keras_ssl.methods.clip import CLIP
from keras_ssl.text import (
    CIFAR10_CLASSES,
    EVAL_TEMPLATES,
    Tokenizer,
    cifar10_captions,
)

args = common.parser(__doc__, epochs=5, limit=20000, batch_size=128, backbone="tiny", width=1.0).parse_args()

(x_train, y_train), (x_test, y_test) = common.load_cifar10(args)
captions = cifar10_captions(y_train, seed=0)
tokenizer = Tokenizer(max_length=16).adapt(captions)

model = CLIP(common.encoder(args), tokenizer=tokenizer, embed_dim=64, text_width=64, text_depth=2, text_heads=4)
model.compile(optimizer=keras.optimizers.Adam(1e-3))
model.fit(x_train, captions, epochs=args.epochs, batch_size=args.batch_size)

classifier = model.zero_shot_classifier(CIFAR10_CLASSES, templates=EVAL_TEMPLATES)
probabilities = classifier.predict(x_test.astype("float32") / 255.0, batch_size=500)
print("zero-shot accuracy:", (probabilities.argmax(axis=1) == y_test).mean())
test_captions = cifar10_captions(y_test[:1000], seed=1)
print("retrieval:", model.retrieval_recall(x_test[:1000], test_captions, ks=(1, 5), labels=y_test[:1000]))
model.save("clip_cifar10.keras")

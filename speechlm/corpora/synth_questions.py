"""Spoken questions for the speech-to-text chat task (sttc) of the multi-task synthetic corpus.

Short factual questions with short answers, numbers spelled out; ``speechlm prepare --answer-questions``
replaces the answers with the LLM's own text replies, the modality-gap reference.
"""

from __future__ import annotations

_QUESTIONS_TEXT = """
What is the capital of France? | Paris.
What is the capital of Japan? | Tokyo.
What is the capital of Italy? | Rome.
What is the capital of Spain? | Madrid.
What is the capital of Germany? | Berlin.
What is the capital of Canada? | Ottawa.
What is the capital of Australia? | Canberra.
What is the capital of Egypt? | Cairo.
What is the capital of Russia? | Moscow.
What is the capital of Ireland? | Dublin.
What is the capital of Norway? | Oslo.
What is the capital of Portugal? | Lisbon.
What is the capital of Greece? | Athens.
What is the capital of Kenya? | Nairobi.
What is the capital of Argentina? | Buenos Aires.
What is the capital of Scotland? | Edinburgh.
What is the capital of Wales? | Cardiff.
What is the capital of Sweden? | Stockholm.
What is the capital of China? | Beijing.
What is the capital of India? | New Delhi.
What is the capital of Mexico? | Mexico City.
Which is the largest ocean on Earth? | The Pacific Ocean.
Which ocean lies between Europe and North America? | The Atlantic Ocean.
What is the longest river in Africa? | The Nile.
Which continent is Brazil in? | South America.
On which continent is Egypt? | Africa.
What is the tallest mountain in the world? | Mount Everest.
What is the largest hot desert in the world? | The Sahara.
Which country is home to the kangaroo? | Australia.
What is the largest country in the world by area? | Russia.
Which city is known as the Big Apple? | New York City.
In which country are the pyramids of Giza? | Egypt.
In which city is the Eiffel Tower? | Paris.
How many continents are there? | Seven.
What is the largest planet in our solar system? | Jupiter.
Which planet is closest to the Sun? | Mercury.
Which planet is known as the red planet? | Mars.
How many planets are in our solar system? | Eight.
What is the name of our galaxy? | The Milky Way.
What does the Moon travel around? | The Earth.
Which star is at the centre of our solar system? | The Sun.
Which planet is famous for its bright rings? | Saturn.
What is the closest star to the Earth? | The Sun.
How many legs does a spider have? | Eight.
How many legs does an insect have? | Six.
How many legs does a dog have? | Four.
How many arms does an octopus have? | Eight.
How many hearts does an octopus have? | Three.
What is the largest animal on Earth? | The blue whale.
What is the fastest land animal? | The cheetah.
What is the tallest animal in the world? | The giraffe.
What is the largest bird in the world? | The ostrich.
Which mammal can truly fly? | The bat.
What do bees make? | Honey.
What does a caterpillar turn into? | A butterfly or a moth.
What is a baby cat called? | A kitten.
What is a baby dog called? | A puppy.
What is a baby sheep called? | A lamb.
What is a young cow called? | A calf.
What is a group of wolves called? | A pack.
Which bird is a symbol of peace? | The dove.
Which animal is known as the king of the jungle? | The lion.
Which animal has black and white stripes? | The zebra.
What do giraffes mostly eat? | Leaves from tall trees.
What do fish use to breathe? | Gills.
Which vegetable are rabbits said to love? | Carrots.
What gas do plants take in from the air? | Carbon dioxide.
Which gas do we need to breathe? | Oxygen.
What do plants need to make their food? | Sunlight, water and carbon dioxide.
At what temperature does water boil in degrees Celsius? | One hundred degrees, at sea level.
At what temperature does water freeze in degrees Celsius? | Zero degrees.
What is frozen water called? | Ice.
What is the chemical formula for water? | H two O.
What is the chemical symbol for gold? | Au.
How many bones are in the adult human body? | Two hundred and six.
Which organ pumps blood around the body? | The heart.
Which organs do we use to breathe? | The lungs.
What is the largest organ of the human body? | The skin.
How many teeth does an adult usually have? | Thirty two.
How many senses do people traditionally have? | Five.
What is the hardest natural substance? | Diamond.
What force keeps us on the ground? | Gravity.
Which travels faster, light or sound? | Light.
Which metal is liquid at room temperature? | Mercury.
What is the centre of an atom called? | The nucleus.
What do we call a scientist who studies rocks? | A geologist.
What does a thermometer measure? | Temperature.
Which direction does a compass needle point? | North.
Why is the sky blue? | Air scatters blue sunlight more than red light, so blue light reaches us from all over the sky.
Why do we have seasons? | The Earth's axis is tilted, so each half of the planet gets more direct sunlight at some times of the year.
What causes the tides? | Mainly the pull of the Moon's gravity on the oceans.
What colour do you get when you mix blue and yellow? | Green.
What colour do you get when you mix red and white? | Pink.
What colour do you get when you mix red and blue? | Purple.
How many colours are in a rainbow? | Seven.
How many days are in a week? | Seven.
How many months are in a year? | Twelve.
How many days are in a leap year? | Three hundred and sixty six.
How many hours are in a day? | Twenty four.
How many minutes are in an hour? | Sixty.
How many seconds are in a minute? | Sixty.
How many weeks are in a year? | Fifty two.
How many days are in September? | Thirty.
Which month has the fewest days? | February.
What is the first month of the year? | January.
Which day comes after Friday? | Saturday.
Which season comes after winter? | Spring.
How many years are in a century? | One hundred.
What is two plus two? | Four.
What is seven times eight? | Fifty six.
What is nine times nine? | Eighty one.
What is ten minus three? | Seven.
What is one hundred minus one? | Ninety nine.
What is half of fifty? | Twenty five.
What is a third of thirty? | Ten.
What is twelve divided by four? | Three.
What is the square root of sixty four? | Eight.
What number comes after ninety nine? | One hundred.
Is seventeen a prime number? | Yes, seventeen is prime.
How many sides does a triangle have? | Three.
How many sides does a hexagon have? | Six.
How many sides does an octagon have? | Eight.
What do you call a shape with four equal sides and four right angles? | A square.
How many degrees are in a right angle? | Ninety.
How many centimetres are in a metre? | One hundred.
How many grams are in a kilogram? | One thousand.
How many wheels does a bicycle have? | Two.
How many wheels does a tricycle have? | Three.
How many players does a football team have on the pitch? | Eleven.
How many players does a basketball team have on the court? | Five.
In which sport do you use a shuttlecock? | Badminton.
How often are the summer Olympic Games held? | Every four years.
How many strings does a standard guitar have? | Six.
Which instrument has eighty eight keys? | The piano.
What is the opposite of hot? | Cold.
What is the opposite of early? | Late.
What is the plural of mouse? | Mice.
What is the plural of child? | Children.
How many letters are in the English alphabet? | Twenty six.
What is the first letter of the alphabet? | A.
Which language is spoken in Brazil? | Portuguese.
Which language is mainly spoken in Mexico? | Spanish.
Who wrote Romeo and Juliet? | William Shakespeare.
Who painted the Mona Lisa? | Leonardo da Vinci.
Who wrote Pride and Prejudice? | Jane Austen.
What is the currency of Japan? | The yen.
What is the currency of the United Kingdom? | The pound sterling.
What is the main ingredient of guacamole? | Avocado.
What is bread mainly made from? | Flour.
Which fruit is wine usually made from? | Grapes.
What do you call a person who looks after teeth? | A dentist.
What do you call a person who flies an aeroplane? | A pilot.
What do we call the first meal of the day? | Breakfast.
"""

QUESTIONS: tuple[tuple[str, str], ...] = tuple(
    tuple(part.strip() for part in ln.split("|", 1))  # type: ignore[misc]
    for ln in _QUESTIONS_TEXT.strip().splitlines() if ln.strip()
)
"""``(question, answer)`` pairs: short factual questions, numbers spelled out in both."""

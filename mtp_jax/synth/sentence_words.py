"""Word lists for `mtp_jax.synth.sentences` (written for this project).

Nouns are (singular, plural); verbs are (base, third person, past, -ing).
"""


def _nouns(text: str) -> tuple[tuple[str, str], ...]:
  """"box:boxes mouse:mice cat" -> (("box", "boxes"), ("mouse", "mice"), ("cat", "cats"))."""
  out = []
  for item in text.split():
    singular, _, plural = item.partition(":")
    out.append((singular, plural or singular + "s"))
  return tuple(out)


def _verbs(text: str) -> tuple[tuple[str, str, str, str], ...]:
  """"carry,carries,carried,carrying ..." -> tuples of the four forms."""
  return tuple(tuple(item.split(",")) for item in text.split())


NAMES = tuple("""Anna Peter Maria James Laura David Sofia Daniel Emma Thomas Olivia
Robert Grace Henry Alice Samuel Clara Oliver Ruth Victor Helen Martin Julia Simon
Nora George Lucy Adam Irene Paul Diana Frank Rosa Walter Emily Hugo Tessa Oscar
Mila Leo Kevin Sarah Michael Hannah Edward Megan Arthur Naomi Felix Zoe""".split())

PRONOUNS = ("he", "she", "they", "we", "I", "you")

RELATIVES = tuple("""grandmother grandfather brother sister uncle aunt cousin
mother father neighbor friend teacher boss roommate""".split())

PEOPLE = _nouns("""teacher doctor farmer baker pilot nurse student driver painter
neighbor engineer musician lawyer writer cook gardener sailor soldier child:children
woman:women man:men manager officer scientist worker singer dancer clerk guard
player coach captain artist reporter tourist stranger carpenter fisherman:fishermen
librarian mechanic waiter plumber professor traveler visitor shepherd""")

PERSON_ADJECTIVES = tuple("""young old tired happy busy clever friendly quiet
nervous brave patient angry cheerful careful lonely polite curious famous""".split())

ANIMALS = _nouns("""dog cat horse bird fox rabbit cow sheep:sheep goat duck owl
mouse:mice fish:fish bear wolf:wolves deer:deer frog squirrel pony:ponies pigeon
donkey lamb tiger lion monkey turtle chicken goose:geese""")

THINGS = _nouns("""book letter box:boxes chair table window door key lamp bottle
basket bag coat hat shoe map ticket phone camera bicycle car boat cup plate
knife:knives spoon bucket ladder rope candle clock picture newspaper umbrella
blanket pillow wallet ring bell flag kite drum guitar piano radio computer pencil
notebook envelope package jacket sweater glove bench fence gate wagon barrel
mirror shelf:shelves bowl kettle pan jar stone shell feather leaf:leaves brush:brushes
towel suitcase hammer bottle watch:watches glass:glasses carpet curtain""")

FOODS = tuple("""bread cheese apples soup rice coffee tea milk cake pie oranges
potatoes carrots honey butter eggs sandwiches cookies beans lemonade grapes
pears tomatoes onions chocolate noodles pancakes strawberries""".split())

ADJECTIVES = tuple("""old new small large heavy light red blue green yellow white
black brown bright dark quiet noisy warm cold clean dirty empty full broken shiny
wooden strange tiny huge gentle lazy simple pretty rough smooth soft sharp round
narrow wide cheap expensive lovely plain fresh golden silver purple striped
little enormous fragile sturdy dusty spotless crooked curious""".split())

PLACES = tuple("""station market library harbor village hospital bakery museum
airport garden farm river bridge school church office kitchen park beach forest
mountain valley hotel restaurant factory square castle island lake stadium
theater bank barn garage cellar attic playground cottage pharmacy bookshop
cinema mill""".split())

PREPOSITIONS = ("at", "near", "behind", "inside", "outside", "next to",
                "across from", "in front of", "beside", "around", "past",
                "close to", "far from", "opposite")

CITIES = tuple("""London Paris Boston Chicago Denver Dallas Seattle Berlin Madrid
Rome Vienna Dublin Toronto Sydney Tokyo Lisbon Oslo Prague Cairo Athens Geneva
Houston Phoenix Atlanta Miami Portland Glasgow Edinburgh Brighton Oxford""".split())

WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday",
            "Sunday")

MONTHS = ("January", "February", "March", "April", "May", "June", "July",
          "August", "September", "October", "November", "December")

TIME_PHRASES = ("yesterday", "today", "tomorrow", "last night", "this morning",
                "every evening", "after lunch", "before dinner", "at dawn",
                "at noon", "at midnight", "next week", "last summer",
                "in the spring", "in the autumn", "during the winter",
                "on the weekend", "twice a week", "every day", "soon",
                "an hour ago", "right away", "later that afternoon",
                "the day before yesterday", "once a month")

EVENTS = ("the meeting", "the party", "the concert", "the wedding",
          "the game", "the lesson", "the interview", "the picnic",
          "the festival", "the trip", "breakfast", "lunch", "dinner",
          "the holidays", "the race", "the show")

MODALS = ("will", "can", "should", "must", "might", "could", "would", "may")

POSSESSIVES = ("my", "your", "his", "her", "our", "their")

ADVERBS = tuple("""slowly quickly quietly carefully suddenly happily gently
loudly early late again finally proudly calmly nervously politely eagerly
silently bravely patiently""".split())

WEATHER = tuple("""cold windy sunny rainy foggy warm cloudy hot wet dry stormy
chilly bright grey humid mild freezing""".split())

TRANSITIVE = _verbs("""
carry,carries,carried,carrying open,opens,opened,opening find,finds,found,finding
lose,loses,lost,losing paint,paints,painted,painting fix,fixes,fixed,fixing
buy,buys,bought,buying sell,sells,sold,selling bring,brings,brought,bringing
take,takes,took,taking wash,washes,washed,washing fold,folds,folded,folding
drop,drops,dropped,dropping hold,holds,held,holding push,pushes,pushed,pushing
pull,pulls,pulled,pulling clean,cleans,cleaned,cleaning build,builds,built,building
break,breaks,broke,breaking move,moves,moved,moving hide,hides,hid,hiding
borrow,borrows,borrowed,borrowing throw,throws,threw,throwing catch,catches,caught,catching
order,orders,ordered,ordering count,counts,counted,counting check,checks,checked,checking
pack,packs,packed,packing deliver,delivers,delivered,delivering watch,watches,watched,watching
follow,follows,followed,following feed,feeds,fed,feeding visit,visits,visited,visiting
share,shares,shared,sharing keep,keeps,kept,keeping leave,leaves,left,leaving
need,needs,needed,needing want,wants,wanted,wanting see,sees,saw,seeing
like,likes,liked,liking draw,draws,drew,drawing fill,fills,filled,filling
lift,lifts,lifted,lifting sort,sorts,sorted,sorting weigh,weighs,weighed,weighing
measure,measures,measured,measuring repair,repairs,repaired,repairing
return,returns,returned,returning collect,collects,collected,collecting
""")

INTRANSITIVE = _verbs("""
walk,walks,walked,walking run,runs,ran,running sleep,sleeps,slept,sleeping
sing,sings,sang,singing laugh,laughs,laughed,laughing wait,waits,waited,waiting
swim,swims,swam,swimming dance,dances,danced,dancing arrive,arrives,arrived,arriving
rest,rests,rested,resting smile,smiles,smiled,smiling travel,travels,traveled,traveling
work,works,worked,working play,plays,played,playing shout,shouts,shouted,shouting
jump,jumps,jumped,jumping whisper,whispers,whispered,whispering sit,sits,sat,sitting
stand,stands,stood,standing climb,climbs,climbed,climbing hurry,hurries,hurried,hurrying
wander,wanders,wandered,wandering listen,listens,listened,listening
""")

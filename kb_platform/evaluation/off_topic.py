"""Questions the knowledge base's corpora cannot answer (general knowledge, health, cooking,
sport...): the negative set for /ask's refusals, beside Cranfield's answerable questions."""

from __future__ import annotations

OFF_TOPIC_QUESTIONS: tuple[str, ...] = (
    "what is the recommended dose of aspirin for a headache in children?",
    "who won the football world cup in 2014?",
    "how do I bake sourdough bread?",
    "what is the capital of australia?",
    "how many calories are in a banana?",
    "what is the best way to learn the guitar?",
    "when was the printing press invented?",
    "how do vaccines train the immune system?",
    "what is the plot of hamlet?",
    "how do I reset my email password?",
    "which stocks should I buy this year?",
    "what causes migraines?",
    "how do I train a puppy to sit?",
    "what is the tallest mountain in africa?",
    "how is cheese made?",
    "what are the symptoms of the flu?",
    "who painted the mona lisa?",
    "how do I file my taxes?",
    "what is the population of brazil?",
    "how does photosynthesis work in plants?",
)

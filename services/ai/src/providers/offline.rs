//! The offline provider: `skillup up` without API keys still answers every request, with a
//! deterministic sample in the shape of the function asked for (a quiz with questions and an
//! answer key, an article with headings, a lesson plan with timed activities, …), in the
//! request's language, about its topic — fast, and labelled `offline` in every response and
//! in the text itself, so nobody mistakes it for a model's work, and a newcomer without a key
//! still sees what SkillUp does.

use futures::StreamExt;

use super::{
    Answer, ChatRequest, Chunk, ChunkStream, Provider, ProviderError, Usage, estimate_tokens,
};

pub const MODEL: &str = "skillup-offline-1";

pub struct Offline;

/// The sample's text for a function, in English or Russian; `{t}` is the topic.
fn sample(function: &str, ru: bool) -> &'static str {
    match (function, ru) {
        ("quiz", false) => {
            "# Quiz: {t}\n\n1. Which statement about {t} is true?\n   a) It has no practical use\n   b) It rests on a few core ideas worth knowing well\n   c) It cannot be learned step by step\n   d) It never changes\n\n2. What is the best first step when learning {t}?\n   a) Memorising every detail at once\n   b) Skipping the basics\n   c) Working through a small, concrete example\n   d) Avoiding questions\n\n3. How do you know you understand {t}?\n   a) You can explain it in your own words and apply it\n   b) You have heard of it\n   c) You have read one article\n   d) You can spell it\n\nAnswer key: 1 b, 2 c, 3 a."
        }
        ("quiz", true) => {
            "# Тест: {t}\n\n1. Какое утверждение о теме «{t}» верно?\n   а) У неё нет практической пользы\n   б) Она опирается на несколько ключевых идей, которые стоит знать хорошо\n   в) Её нельзя изучать шаг за шагом\n   г) Она никогда не меняется\n\n2. С чего лучше начать изучение темы «{t}»?\n   а) Заучить все детали сразу\n   б) Пропустить основы\n   в) Разобрать небольшой конкретный пример\n   г) Не задавать вопросов\n\n3. Как понять, что вы разобрались в теме «{t}»?\n   а) Вы можете объяснить её своими словами и применить\n   б) Вы о ней слышали\n   в) Вы прочитали одну статью\n   г) Вы знаете, как она пишется\n\nКлюч: 1 б, 2 в, 3 а."
        }
        ("article", false) => {
            "# {t}\n\n## Introduction\nWhy {t} matters, and who this article is for.\n\n## Key ideas\nThe few ideas everything about {t} rests on, each with a short example.\n\n## In practice\nHow {t} is used day to day, and the mistakes people make first.\n\n## Conclusion\nWhat to remember about {t}, and where to go next."
        }
        ("article", true) => {
            "# {t}\n\n## Введение\nПочему тема «{t}» важна и для кого эта статья.\n\n## Ключевые идеи\nНесколько идей, на которых держится тема, — каждая с коротким примером.\n\n## На практике\nКак это применяют каждый день и какие ошибки делают в начале.\n\n## Вывод\nЧто запомнить и куда двигаться дальше."
        }
        ("summary", false) => {
            "# Summary: {t}\n\n- What {t} is, in one sentence.\n- The core idea it rests on.\n- Where it is used.\n- The most common misunderstanding.\n- What to learn next."
        }
        ("summary", true) => {
            "# Конспект: {t}\n\n- Что это такое — одним предложением.\n- Главная идея, на которой всё держится.\n- Где это применяется.\n- Самое частое заблуждение.\n- Что изучить дальше."
        }
        ("lesson_plan", false) => {
            "# Lesson plan: {t}\n\nGoals: learners can explain {t} and use it in a simple task.\nMaterials: board, handout, a short example.\n\n1. Warm-up (5 min): what do you already know about {t}?\n2. Explanation (15 min): the core ideas, with an example.\n3. Practice (15 min): pairs solve a short task.\n4. Review (10 min): answers, questions, summary.\n\nHomework: one more task on {t}.\nCheck: an exit question at the door."
        }
        ("lesson_plan", true) => {
            "# План урока: {t}\n\nЦели: ученики могут объяснить тему и применить её в простой задаче.\nМатериалы: доска, раздаточный лист, короткий пример.\n\n1. Разминка (5 мин): что вы уже знаете о теме «{t}»?\n2. Объяснение (15 мин): ключевые идеи с примером.\n3. Практика (15 мин): пары решают короткую задачу.\n4. Подведение итогов (10 мин): ответы, вопросы, вывод.\n\nДомашнее задание: ещё одна задача по теме.\nПроверка: вопрос на выходе из класса."
        }
        ("flashcards", false) => {
            "# Flashcards: {t}\n\nCard 1 — Front: What is {t}? / Back: A one-sentence definition.\nCard 2 — Front: Why does {t} matter? / Back: The problem it solves.\nCard 3 — Front: Give an example of {t}. / Back: A short, concrete case."
        }
        ("flashcards", true) => {
            "# Карточки: {t}\n\nКарточка 1 — Вопрос: Что такое «{t}»? / Ответ: Определение в одном предложении.\nКарточка 2 — Вопрос: Зачем это нужно? / Ответ: Какую задачу это решает.\nКарточка 3 — Вопрос: Приведите пример. / Ответ: Короткий конкретный случай."
        }
        ("social_post", false) => {
            "Today I learned something about {t}: the basics are simpler than they look, and one small example makes them click. What helped you most when you started? #learning"
        }
        ("social_post", true) => {
            "Сегодня разобрался в теме «{t}»: основы проще, чем кажется, а один небольшой пример всё расставляет по местам. А что помогло вам в начале? #учёба"
        }
        ("email", false) => {
            "Subject: {t}\n\nHello,\n\nI am writing about {t}. In short: here is what it is, why it matters to us, and what I suggest we do next.\n\nBest regards,"
        }
        ("email", true) => {
            "Тема: {t}\n\nЗдравствуйте!\n\nПишу по поводу темы «{t}». Коротко: что это, почему это важно для нас и что я предлагаю сделать дальше.\n\nС уважением,"
        }
        (_, false) => {
            "# {t}\n\n## Overview\nWhat {t} is and why it matters.\n\n## Details\nThe main points, one by one.\n\n## Next steps\nWhat to read or try next."
        }
        (_, true) => {
            "# {t}\n\n## Обзор\nЧто это и почему это важно.\n\n## Подробности\nГлавные пункты по порядку.\n\n## Дальше\nЧто почитать или попробовать дальше."
        }
    }
}

/// The sample for `req`: the label, then the function's shape about the topic, in the
/// request's language, cut at `max_tokens` words. Deterministic: the same request gives the
/// same text.
pub fn compose(req: &ChatRequest) -> (String, &'static str) {
    let ru = req.locale == "ru";
    let label = if ru {
        "[Офлайн-образец: провайдер ИИ не настроен — задайте OPENAI_API_KEY или ANTHROPIC_API_KEY, чтобы получить настоящий текст.]"
    } else {
        "[Offline sample: no AI provider is configured — set OPENAI_API_KEY or ANTHROPIC_API_KEY for real text.]"
    };
    let topic =
        if req.topic.is_empty() { if ru { "тема" } else { "the topic" } } else { &req.topic };
    let body = sample(&req.function, ru).replace("{t}", topic);
    let full = format!("{label}\n\n{body}");
    // Cut at `max_tokens` words, keeping the line breaks of what stays.
    let limit = req.max_tokens.max(1) as usize;
    let mut words = 0;
    let mut end = full.len();
    let mut in_word = false;
    for (i, c) in full.char_indices() {
        if c.is_whitespace() {
            in_word = false;
        } else if !in_word {
            in_word = true;
            words += 1;
            if words > limit {
                end = i;
                break;
            }
        }
    }
    let reason = if end < full.len() { "length" } else { "stop" };
    (full[..end].trim_end().to_owned(), reason)
}

/// The sample's words as a stream: each piece is a word with the whitespace before it.
fn pieces(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut in_word = false;
    for c in text.chars() {
        if c.is_whitespace() {
            if in_word {
                out.push(std::mem::take(&mut current));
                in_word = false;
            }
        } else {
            in_word = true;
        }
        current.push(c);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

#[async_trait::async_trait]
impl Provider for Offline {
    fn label(&self) -> &'static str {
        "offline"
    }

    async fn complete(&self, req: &ChatRequest) -> Result<Answer, ProviderError> {
        let (text, reason) = compose(req);
        let usage = Usage {
            input: req.messages.iter().map(|m| estimate_tokens(&m.content)).sum(),
            output: text.split_whitespace().count() as u32,
        };
        Ok(Answer { text, usage, finish_reason: reason.into(), model: MODEL.into() })
    }

    async fn stream(&self, req: &ChatRequest) -> Result<ChunkStream, ProviderError> {
        let answer = self.complete(req).await?;
        let mut chunks: Vec<Result<Chunk, ProviderError>> = Vec::new();
        for piece in pieces(&answer.text) {
            chunks.push(Ok(Chunk::Delta(piece)));
        }
        chunks.push(Ok(Chunk::Finish(answer.finish_reason)));
        chunks.push(Ok(Chunk::Usage(answer.usage)));
        Ok(futures::stream::iter(chunks).boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::{ChatMessage, Role};

    fn req(function: &str, locale: &str, max: u32) -> ChatRequest {
        ChatRequest {
            model: MODEL.into(),
            messages: vec![
                ChatMessage { role: Role::System, content: "be brief".into() },
                ChatMessage {
                    role: Role::User,
                    content: "Write a quiz about «rust ownership».".into(),
                },
            ],
            max_tokens: max,
            temperature: 0.0,
            top_p: None,
            stop: Vec::new(),
            function: function.into(),
            topic: "rust ownership".into(),
            locale: locale.into(),
        }
    }

    /// Issue 27: the offline text echoed the prompt's instructions back; it is a labelled
    /// sample in the function's shape, in the request's language.
    #[tokio::test]
    async fn a_labelled_sample_in_the_shape_of_the_function_and_its_language() {
        let a = Offline.complete(&req("quiz", "en", 800)).await.unwrap();
        assert_eq!(a, Offline.complete(&req("quiz", "en", 800)).await.unwrap(), "deterministic");
        assert!(a.text.starts_with("[Offline sample"), "{}", a.text);
        assert!(a.text.contains("# Quiz: rust ownership"), "{}", a.text);
        assert!(a.text.contains("   b) ") && a.text.contains("Answer key:"), "{}", a.text);
        assert!(!a.text.contains("Write a quiz"), "not the prompt echoed: {}", a.text);
        assert_eq!(a.finish_reason, "stop");
        let ru = Offline.complete(&req("lesson_plan", "ru", 800)).await.unwrap();
        assert!(ru.text.starts_with("[Офлайн-образец"), "{}", ru.text);
        assert!(
            ru.text.contains("# План урока: rust ownership")
                && ru.text.contains("Разминка (5 мин)")
        );
        let article = Offline.complete(&req("article", "en", 800)).await.unwrap();
        assert!(article.text.contains("\n## Key ideas\n"), "{}", article.text);
        let other = Offline.complete(&req("riddle", "en", 800)).await.unwrap();
        assert!(other.text.contains("## Overview"), "any function gets a sample");

        let short = Offline.complete(&req("quiz", "en", 5)).await.unwrap();
        assert_eq!((short.usage.output, short.finish_reason.as_str()), (5, "length"));
        let streamed: Vec<_> =
            Offline.stream(&req("quiz", "en", 800)).await.unwrap().collect().await;
        let text: String = streamed
            .iter()
            .filter_map(|c| match c {
                Ok(Chunk::Delta(t)) => Some(t.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(text, a.text, "the stream spells the same answer, line breaks included");
    }
}

"""Request and response models of the OpenAI-compatible routes (/v1/models, /v1/chat/completions,
/v1/completions).

Requests are lenient as OpenAI clients expect: fields this service does not use (``top_p``,
``stop``, ``user``, ``tools``, ``tool_choice``...) are ignored rather than refused; ``n`` above 1
is refused. Messages may be of any length (the body limit bounds them): only the question, the
last user message of a chat answered from the index, is bounded (``check_question``, 413), since
chat UIs resend earlier turns of any length with every question.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)

from api.protocol import (
    HAS_TEXT,
    MAX_QUESTION_CHARS,
    MAX_TOKENS_BOUND,
    Citation,
    Filters,
    whole_number,
)

# Chat UIs resend the whole conversation; RAG_CHAT_MAX_REQUEST_BYTES bounds it first.
MAX_MESSAGES = 2048
MAX_PARTS = 64


def _has_text(value: str) -> str:
    if not re.search(HAS_TEXT, value):
        raise ValueError("a user message must not be blank")
    return value


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["text"]
    text: StrictStr = Field(min_length=1, json_schema_extra={"pattern": HAS_TEXT})

    _text = field_validator("text")(_has_text)


UserContent = (
    Annotated[StrictStr, Field(min_length=1, json_schema_extra={"pattern": HAS_TEXT})]
    | Annotated[list[TextPart], Field(min_length=1, max_length=MAX_PARTS)]
)


class UserMessage(BaseModel):
    """A user turn: text, or text parts (images and other parts are not supported)."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["user"]
    content: UserContent
    name: StrictStr | None = None

    @field_validator("content")
    @classmethod
    def _content(cls, value: str | list[TextPart]) -> str | list[TextPart]:
        return _has_text(value) if isinstance(value, str) else value

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "\n".join(part.text for part in self.content)


class OtherMessage(BaseModel):
    """A system, developer, assistant or tool turn: accepted, and ignored when answering."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "assistant", "tool"]
    content: Any = None

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else ""


Message = Annotated[UserMessage | OtherMessage, Field(discriminator="role")]


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: StrictBool = False


Tokens = Annotated[StrictInt, Field(ge=1, le=MAX_TOKENS_BOUND)]


class AnswerRequest(BaseModel):
    """What a chat completion and a text completion share: the model and the answer's settings."""

    model_config = ConfigDict(extra="ignore")

    model: StrictStr = Field(
        min_length=1,
        max_length=200,
        description="`rag:<index>`, or the engine's own model (no retrieval), as GET /v1/models "
        "lists them.",
        examples=["rag:default"],
    )
    max_tokens: Tokens | None = Field(
        default=None, description="Longest answer in tokens; at most half the engine's window."
    )
    temperature: float | None = Field(default=None, ge=0.0, le=2.0, strict=True)
    n: Literal[1] | None = None
    stream: StrictBool | None = False
    stream_options: StreamOptions | None = None
    # Extensions (the openai client sends them with `extra_body`).
    top_k: Annotated[int, Field(ge=1, le=100, strict=True)] | Literal["auto"] | None = Field(
        default=None, description='Extension: 1 to 100 passages, or "auto" to fill the window.'
    )
    filters: Filters | None = Field(default=None, description="Extension: as /ask's filters.")
    sources: StrictBool | None = Field(
        default=None,
        description="Extension: end the content with a list of the passages its [n] marks cite "
        "(unset: RAG_CHAT_SOURCES).",
    )

    _counts = field_validator("max_tokens", "top_k", mode="before")(whole_number)

    @field_validator("n", mode="before")
    @classmethod
    def _one_choice(cls, value: Any) -> Any:
        if isinstance(value, bool):  # JSON's true is not 1
            raise ValueError("n: only 1 choice is supported")
        return value

    def answer_tokens(self) -> int | None:
        return self.max_tokens

    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class ChatCompletionRequest(AnswerRequest):
    messages: list[Message] = Field(
        min_length=1,
        max_length=MAX_MESSAGES,
        description="The last `user` message is the question (at most "
        f"{MAX_QUESTION_CHARS} characters for a `rag:` model); earlier turns may be of any "
        "length. Chat UIs' task prompts (`### Task:`) and the engine's own model are answered "
        "by the engine without retrieval.",
        json_schema_extra={
            "contains": {"type": "object", "properties": {"role": {"const": "user"}}}
        },
    )
    max_completion_tokens: Tokens | None = Field(
        default=None, description="Same as max_tokens (wins over it when both are sent)."
    )

    _completion_tokens = field_validator("max_completion_tokens", mode="before")(whole_number)

    @model_validator(mode="after")
    def _asks_something(self) -> ChatCompletionRequest:
        if not any(m.role == "user" for m in self.messages):
            raise ValueError("messages: at least one message must have the role 'user'")
        return self

    def answer_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


Prompt = Annotated[StrictStr, Field(min_length=1, json_schema_extra={"pattern": HAS_TEXT})]


class CompletionRequest(AnswerRequest):
    """A text completion (``/v1/completions``): the prompt is the question."""

    prompt: Prompt | Annotated[list[Prompt], Field(min_length=1, max_length=1)] = Field(
        description="The question (at most "
        f"{MAX_QUESTION_CHARS} characters for a `rag:` model), or a list of exactly one.",
        examples=["What is the travel budget?"],
    )

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, value: str | list[str]) -> str | list[str]:
        for text in [value] if isinstance(value, str) else value:
            _has_text(text)
        return value

    def turns(self) -> list[UserMessage]:
        """The prompt as the chat of one user message it is answered as."""
        text = self.prompt if isinstance(self.prompt, str) else self.prompt[0]
        return [UserMessage.model_construct(role="user", content=text, name=None)]


class ModelCard(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelCard]


class AssistantMessage(BaseModel):
    role: Literal["assistant"]
    content: str


class Choice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: str
    logprobs: None = None


class ChatUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[Choice]
    usage: ChatUsage
    citations: list[Citation] = Field(
        description="Extension: the passages the answer may cite, numbered as its [n] marks."
    )


class CompletionChoice(BaseModel):
    index: int
    text: str
    finish_reason: str
    logprobs: None = None


class TextCompletion(BaseModel):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: ChatUsage
    citations: list[Citation] = Field(
        description="Extension: the passages the answer may cite, numbered as its [n] marks."
    )
